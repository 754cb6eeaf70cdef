"""The layout's rules, read from the source: imports go one way, from the adapter down to
the data, and no module imports one that imports it back (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from models.settings import REPO_ROOT

# Bottom to top. A module may import its own unit (one of these names) and any unit of a
# lower layer; never a unit beside it or above it.
LAYERS = (
    ("models.settings", "models.errors", "models.log", "models.specs"),
    ("models.weights",),
    ("models.loras",),
    ("models.request",),
    ("models.engine",),
    ("models.flux", "models.sdxl"),
    ("models.serving",),
    ("models.train",),
    ("models.mini",),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# What no module under models/ may import: the Cog adapter and everything above it.
ABOVE_MODELS = ("cog", "coglet", "predict", "train", "cog_fixes", "tools", "tests")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((REPO_ROOT / "models").rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports, anywhere in the file (functions and TYPE_CHECKING
    blocks too): for `from a import b`, a.b when that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def _graph() -> dict[str, set[str]]:
    sources = _sources()
    return {name: _imports(name, path, set(sources)) for name, path in sources.items()}


def _unit(module: str) -> str | None:
    return next((u for u in RANK if module == u or module.startswith(u + ".")), None)


def test_every_module_under_models_belongs_to_a_layer():
    assert [m for m in _sources() if m != "models" and _unit(m) is None] == []


def test_imports_go_down_the_layers_only():
    wrong = []
    for module, imported in _graph().items():
        unit = _unit(module)
        for target in imported:
            if target.split(".")[0] in ABOVE_MODELS:
                wrong.append(f"{module} imports {target}, above models/")
                continue
            other = _unit(target)
            if unit is None or other is None or other == unit:
                continue
            if RANK[other] >= RANK[unit]:
                wrong.append(f"{module} imports {target} ({other} is not below {unit})")
    assert wrong == []


def test_no_import_circles():
    graph = _graph()
    circles, stack, index, low, on_stack = [], [], {}, {}, set()

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for node in graph:
        if node not in index:
            visit(node)
    assert circles == []


def test_the_checker_sees_circles_and_upward_imports(tmp_path):
    """The rules above can fail: a relative import and a function-level one are seen."""
    (tmp_path / "a.py").write_text("def f():\n    from models.serving import model\n")
    assert "models.serving.model" in _imports(
        "models.request.a", tmp_path / "a.py", {"models.serving.model"}
    )
    (tmp_path / "b.py").write_text("from . import sizes\n")
    found = _imports("models.request.b", tmp_path / "b.py", {"models.request.sizes"})
    assert found == {"models.request.sizes"}


# A path in prose: a file of ours (.py or .md) or a folder, under one of our top folders.
_MENTION = re.compile(r"(?<![\w/.])((?:models|tools|tests|script|docs)/[\w/.-]*(?:\.py|\.md|/))")


def test_every_file_the_docs_and_docstrings_name_exists():
    """After a move, README.md, docs/ and the code's own comments still point at files
    that are there."""
    sources = [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
    for folder in ("models", "tools", "tests", "script"):
        sources += [p for p in (REPO_ROOT / folder).rglob("*") if p.suffix in (".py", "")]
    sources += [REPO_ROOT / name for name in ("predict.py", "train.py", "cog_fixes.py")]
    missing = {
        f"{source.relative_to(REPO_ROOT)}: {mention}"
        for source in sources
        if source.is_file()
        for mention in _MENTION.findall(source.read_text(errors="replace"))
        if not (REPO_ROOT / mention).exists()
    }
    assert sorted(missing) == []


def test_the_cog_adapter_imports_no_tooling():
    """predict.py, train.py and cog_fixes.py sit above models/ and below tools/."""
    wrong = []
    for name in ("predict", "train", "cog_fixes"):
        imported = _imports(name, REPO_ROOT / f"{name}.py", set(_sources()))
        wrong += [f"{name} imports {m}" for m in imported if m.split(".")[0] in ("tools", "tests")]
    assert wrong == []

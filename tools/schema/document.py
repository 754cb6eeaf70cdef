"""The whole OpenAPI document of a predictor or trainer, written where coglet reads it,
and the command line."""

import argparse
import copy
import importlib.util
import inspect
import sys
import typing
from pathlib import Path
from typing import Any

import cog

from tools.schema.go import FIXED_SCHEMAS, PATHS, renamed_for_training, to_json, to_json_indented
from tools.schema.types import SchemaError, input_component, output_type


def load_target(ref: str, root: Path) -> object:
    """Import `file.py:Name` relative to `root` and return the named object."""
    file_part, sep, name = ref.partition(":")
    if not sep or not file_part.endswith(".py") or not name:
        raise SchemaError(f"expected a reference like 'predict.py:Predictor', got {ref!r}")
    path = (Path(root) / file_part).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{ref}: no file {path}")
    # The predictor imports its siblings (`from models import ...`) as cog does.
    root_dir = str(Path(root).resolve())
    if root_dir not in sys.path:
        sys.path.insert(0, root_dir)

    module_name = Path(file_part).with_suffix("").as_posix().replace("/", ".")
    module = sys.modules.get(module_name)
    if module is None or Path(getattr(module, "__file__", "") or "").resolve() != path:
        if module is not None:
            # Another file already owns the plain name (e.g. two tmp projects in
            # one test run); a private name avoids swapping classes under it.
            module_name = f"_cog_target_{abs(hash(str(path))):x}_{module_name}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Registered before exec: dataclasses in the file look their module up there.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    if not hasattr(module, name):
        raise SchemaError(f"{ref}: {path.name} defines no {name!r}")
    return getattr(module, name)


def _entry_point(target: object, mode: str = "predict") -> Any:
    """The callable whose signature is the API: run() or predict(), as the SDK picks; in
    train mode a train() function, or a class's train() method (as Go's parser finds it)."""
    if mode == "train":
        fn = getattr(target, "train", None) if inspect.isclass(target) else target
        if not callable(fn):
            raise SchemaError(f"{target!r} is neither a train() function nor has train()")
        return inspect.unwrap(fn)
    if not inspect.isclass(target):
        raise SchemaError(f"{target!r} is not a predictor class")
    stubs = (None, cog.BaseRunner.run, cog.BaseRunner.predict)  # BasePredictor inherits these
    names = [n for n in ("run", "predict") if getattr(target, n, None) not in stubs]
    if not names:
        raise SchemaError(f"{target.__name__} defines no run() or predict()")
    if len(names) == 2:
        raise SchemaError(f"{target.__name__} must define either run() or predict(), not both")
    return inspect.unwrap(getattr(target, names[0]))


def openapi_schema(target: object, mode: str = "predict") -> dict:
    """The OpenAPI document `cog build` would write for `target`: a predictor class, or
    in train mode a train() function (or a class with train())."""
    fn = _entry_point(target, mode)
    input_schema, enums = input_component(fn)
    returns = typing.get_type_hints(fn, include_extras=True).get("return")
    if returns in (None, type(None)):
        raise SchemaError(f"{fn.__qualname__}() needs a return type annotation")
    output = {**output_type(returns), "title": "Output"}
    # Copies, so callers may edit the result without touching the constants.
    paths, fixed = copy.deepcopy(PATHS), copy.deepcopy(FIXED_SCHEMAS)
    if mode == "train":
        input_schema = {**input_schema, "title": "TrainingInput"}
        schemas = {"TrainingInput": input_schema, "TrainingOutput": output, **enums}
        paths, fixed = renamed_for_training(paths), renamed_for_training(fixed)
        for name in ("TrainingRequest", "TrainingResponse"):
            fixed[name]["title"] = name
    else:
        schemas = {"Input": input_schema, "Output": output, **enums}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": cog.__version__},
        "paths": paths,
        "components": {"schemas": {**schemas, **fixed}},
    }


def merged_schema(predict: dict, train: dict) -> dict:
    """Go's MergeSchemas: the predict document plus the train document's paths and
    components that it lacks (what `cog build` writes when cog.yaml has both keys)."""
    merged = copy.deepcopy(predict)
    for key, value in train["paths"].items():
        merged["paths"].setdefault(key, value)
    for key, value in train["components"]["schemas"].items():
        merged["components"]["schemas"].setdefault(key, value)
    return merged


def write_schema(
    ref: str, root: Path, *, into: Path | None = None, train_ref: str | None = None
) -> Path:
    """Write .cog/openapi_schema.json for `ref` (a file relative to `root`) into `into`,
    by default `root` as `cog build` does, and return its path. With `train_ref` (cog.yaml's
    `train:`), the predict and train documents merged, as `cog build` writes them."""
    predict = openapi_schema(load_target(ref, Path(root)))
    if train_ref is None:
        text = to_json(predict)
    else:
        train = openapi_schema(load_target(train_ref, Path(root)), mode="train")
        text = to_json_indented(merged_schema(predict, train))
    out = Path(into or root) / ".cog" / "openapi_schema.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)  # atomic, so a server starting in parallel never reads half a file
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.schema",
        description="Write .cog/openapi_schema.json as `cog build` does, without Docker or Go.",
    )
    parser.add_argument("ref", help="predictor reference, e.g. predict.py:FluxSchnellPredictor")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project folder (default: .)")
    parser.add_argument("--train", help="train reference too, e.g. train.py:train")
    args = parser.parse_args(argv)
    try:
        path = write_schema(args.ref, args.root, train_ref=args.train)
    except (SchemaError, FileNotFoundError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(path)
    return 0

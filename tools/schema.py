"""Write `.cog/openapi_schema.json` the way `cog build` does, without Docker or Go.

coglet validates request inputs only against that file, so a local
`python -m cog.server.http` answers bad inputs with 422 only once it exists.
The shape follows cog's Go generator (pkg/schema/openapi_spec.go): an image
built by `cog build` and the local server should publish the same document.

Unlike the Go generator, which parses source text, this reads the imported
predictor (signature, type hints, `cog.Input` FieldInfo). Two facts leave no
runtime trace and are read back from the source with `ast`: whether an
`Input(...)` call passed `default=` at all, and the `@cog.streaming` decorator.

CLI: python -m tools.schema predict.py:Predictor [--mode train] [--train REF] [--root DIR]
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import dataclasses
import enum
import importlib.util
import inspect
import json
import os
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import cog
from cog import FieldInfo

MODES = ("predict", "train")


class SchemaError(TypeError):
    """The target cannot be described by a cog OpenAPI schema."""


# --- loading -----------------------------------------------------------------


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
        module = _import_file(module_name, path)
    try:
        return getattr(module, name)
    except AttributeError:
        raise SchemaError(f"{ref}: {path.name} defines no {name!r}") from None


def _import_file(module_name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before exec: dataclasses (cog.BaseModel) look themselves up there.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _entry_point(target: object, mode: str) -> tuple[Any, bool]:
    """The function whose signature is the API, and whether it takes `self`."""
    if mode not in MODES:
        raise SchemaError(f"mode must be one of {MODES}, got {mode!r}")
    if inspect.isfunction(target):
        return inspect.unwrap(target), False
    if not inspect.isclass(target):
        raise SchemaError(f"{target!r} is neither a predictor class nor a function")
    if mode == "train":
        names = ["train"]
    else:
        names = [n for n in ("run", "predict") if _user_defines(target, n)]
        if len(names) == 2:
            raise SchemaError(f"{target.__name__} must define either run() or predict(), not both")
    if not names or not callable(getattr(target, names[0], None)):
        wanted = "train()" if mode == "train" else "run() or predict()"
        raise SchemaError(f"{target.__name__} defines no {wanted}")
    return inspect.unwrap(getattr(target, names[0])), True


def _user_defines(cls: type, name: str) -> bool:
    # Same rule as the SDK: cog's base classes define stub run()/predict().
    for owner in inspect.getmro(cls):
        if owner in (cog.BaseRunner, cog.BasePredictor, object):
            return False
        if callable(owner.__dict__.get(name)):
            return True
    return False


def _source_facts(fn: Any) -> tuple[set[str], bool]:
    """Params given as `Input(...)` without a default, and whether fn is @streaming."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        named = _named_inputs(ast.parse(inspect.getsource(inspect.getmodule(fn))))
    except (OSError, TypeError, SyntaxError):
        return set(), False  # no source: every Input() counts as having a default
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return set(), False
    positional = node.args.posonlyargs + node.args.args
    defaulted = positional[len(positional) - len(node.args.defaults) :]
    bare = set()
    for arg, value in zip(defaulted, node.args.defaults, strict=True):
        # `prompt: str = Inputs.prompt` shares one Input() between predictors.
        call = named.get(ast.unparse(value), value)
        if (
            _is_input_call(call)
            and not call.args
            and all(k.arg != "default" for k in call.keywords)
        ):
            bare.add(arg.arg)
    streaming = any(_called_name(d) == "streaming" for d in node.decorator_list)
    return bare, streaming


def _named_inputs(module: ast.Module) -> dict[str, ast.Call]:
    """`NAME = Input(...)` and `Class.NAME = Input(...)` at module level, by dotted name."""
    found = {}
    for stmt in module.body:
        prefix, body = (
            (f"{stmt.name}.", stmt.body) if isinstance(stmt, ast.ClassDef) else ("", [stmt])
        )
        for item in body:
            target = (
                item.targets[0] if isinstance(item, ast.Assign) else getattr(item, "target", None)
            )
            value = getattr(item, "value", None)
            if isinstance(target, ast.Name) and _is_input_call(value):
                found[prefix + target.id] = value
    return found


def _is_input_call(node: Any) -> bool:
    return isinstance(node, ast.Call) and _called_name(node.func) == "Input"


def _called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


# --- types -------------------------------------------------------------------

_URI = {"type": "string", "format": "uri"}
_SECRET = {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
_SCALARS: dict[Any, dict[str, Any]] = {
    bool: {"type": "boolean"},
    float: {"type": "number"},
    int: {"type": "integer"},
    str: {"type": "string"},
    cog.File: _URI,
    cog.Secret: _SECRET,
    Any: {"type": "object"},
    dict: {"type": "object"},
}
_SUPPORTED = "str, int, float, bool, cog.Path, cog.File, cog.Secret, dict, Any"


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        if any(m is cog.Opaque for m in tp.__metadata__):
            raise SchemaError("Annotated[..., cog.Opaque] is not supported by tools.schema")
        tp = tp.__origin__
    return tp


def _split_optional(tp: Any, where: str) -> tuple[Any, bool]:
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return tp, False
    rest = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(rest) != 1:
        raise SchemaError(f"{where}: unions other than Optional[X] are not supported ({tp!r})")
    return _strip_annotated(rest[0]), True


def _scalar(tp: Any, where: str) -> dict[str, Any]:
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if typing.get_origin(tp) is dict:
        return {"type": "object"}
    # Matches both the SDK (os.PathLike means Path) and Go (any name "Path").
    if isinstance(tp, type) and issubclass(tp, os.PathLike):
        return dict(_URI)
    raise SchemaError(f"{where}: unsupported type {tp!r}; supported: {_SUPPORTED}, List[...]")


def _input_type(tp: Any, where: str) -> tuple[dict[str, Any], bool, bool]:
    """(inline JSON schema, nullable, is a list) for an input annotation."""
    tp, nullable = _split_optional(_strip_annotated(tp), where)
    if tp is list or typing.get_origin(tp) is list:
        args = typing.get_args(tp)
        if len(args) != 1:
            raise SchemaError(f"{where}: a list input needs one item type, e.g. List[str]")
        item = _strip_annotated(args[0])
        if _split_optional(item, where)[1] or typing.get_origin(item) is list:
            raise SchemaError(f"{where}: nested generics like List[Optional[X]] are not supported")
        schema = {"type": "array", "items": _scalar(item, where)}
    else:
        schema = _scalar(tp, where)
    if nullable:
        schema["nullable"] = True
    return schema, nullable, "items" in schema


def _output_type(tp: Any, where: str = "output") -> dict[str, Any]:
    tp = _strip_annotated(tp)
    if _split_optional(tp, where)[1]:
        raise SchemaError(f"{where} must not be Optional")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is list or origin is list:
        return {
            "type": "array",
            "items": _output_type(args[0], where) if args else {"type": "object"},
        }
    if origin is dict and len(args) == 2:
        return {"type": "object", "additionalProperties": _output_type(args[1], where)}
    if origin in (cog.ConcatenateIterator, cog.AsyncConcatenateIterator):
        if args != (str,):
            raise SchemaError(f"{where}: ConcatenateIterator must yield str")
        return {
            "type": "array",
            "items": {"type": "string"},
            "x-cog-array-type": "iterator",
            "x-cog-array-display": "concatenate",
        }
    if origin in (collections.abc.Iterator, collections.abc.AsyncIterator):
        return {
            "type": "array",
            "items": _output_type(args[0], where),
            "x-cog-array-type": "iterator",
        }
    if inspect.isclass(tp) and issubclass(tp, cog.BaseModel):
        return _model_type(tp)
    return _scalar(tp, where)


def _model_type(model: type) -> dict[str, Any]:
    hints = typing.get_type_hints(model)
    properties, required = {}, []
    for field in dataclasses.fields(model):
        where = f"{model.__name__}.{field.name}"
        inner, nullable = _split_optional(_strip_annotated(hints[field.name]), where)
        prop = _output_type(inner, where)
        prop["title"] = _title(field.name)
        if nullable:
            prop["nullable"] = True
        no_default = field.default is dataclasses.MISSING
        if not nullable and no_default and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
        properties[field.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _title(name: str) -> str:
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _json_value(value: Any) -> Any:
    """A default or choice as the Go generator writes it (float64 1.0 prints as 1)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, cog.Secret):
        value = value.get_secret_value()
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_value(v) for v in value]
    return value


# --- schema ------------------------------------------------------------------


def _input_component(
    params: list[inspect.Parameter], hints: dict[str, Any], bare_inputs: set[str], title: str
) -> tuple[dict, dict[str, dict]]:
    properties: dict[str, dict] = {}
    required: list[str] = []
    enums: dict[str, dict] = {}

    for order, param in enumerate(params):
        name = param.name
        where = f"input {name!r}"
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise SchemaError(f"{where}: *args, **kwargs and keyword-only inputs are not supported")
        if name not in hints:
            raise SchemaError(f"{where} has no type annotation")
        schema, nullable, is_list = _input_type(hints[name], where)

        if isinstance(param.default, FieldInfo):
            info, default = param.default, param.default.default
            has_default = name not in bare_inputs
        else:
            info, default = FieldInfo(), param.default
            has_default = default is not param.empty

        if _strip_annotated(hints[name]) is cog.Secret and has_default and default is None:
            nullable = True  # Go: `Secret = Input(default=None)` is an optional credential
        # `seed: int = Input(default=None)` means "pick at run time", not a default.
        if has_default and default is None and not nullable:
            has_default = False

        prop: dict[str, Any] = {"x-order": order}
        if info.choices:
            if is_list or schema.get("type") not in ("string", "integer") or "format" in schema:
                raise SchemaError(f"{where}: choices need a str or int input")
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": [_json_value(c) for c in info.choices],
                "type": schema["type"],
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(schema)
        if info.accept is not None and schema.get("items", schema).get("format") != "uri":
            raise SchemaError(f"{where}: accept is only valid on Path or File inputs")

        if not has_default and not nullable:
            required.append(name)
        if has_default:
            prop["default"] = _json_value(default)
        if nullable:
            prop["nullable"] = True
        if info.description is not None:
            prop["description"] = info.description
        for key, value in (
            ("minimum", info.ge),
            ("maximum", info.le),
            ("minLength", info.min_length),
            ("maxLength", info.max_length),
            ("pattern", info.regex),
        ):
            if value is not None:
                prop[key] = _json_value(value)
        if info.deprecated:
            prop["deprecated"] = True
        if info.accept is not None:
            prop["x-cog-accept"] = info.accept
        properties[name] = prop

    component: dict[str, Any] = {"title": title, "type": "object", "properties": properties}
    if required:
        component["required"] = required
    return component, enums


def _json_response(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(schema: dict | None = None) -> dict:
    return {"description": "Successful Response", **_json_response(schema or {})}


_VALIDATION_ERROR = {
    "description": "Validation Error",
    **_json_response({"$ref": "#/components/schemas/HTTPValidationError"}),
}


def openapi_schema(target: object, *, mode: str = "predict") -> dict:
    """The OpenAPI document `cog build` would write for `target` in `mode`."""
    fn, has_self = _entry_point(target, mode)
    train = mode == "train"
    noun = "training" if train else "prediction"
    input_key, output_key = ("TrainingInput", "TrainingOutput") if train else ("Input", "Output")
    request, response = f"{noun.title()}Request", f"{noun.title()}Response"

    hints = typing.get_type_hints(fn, include_extras=True)
    params = list(inspect.signature(fn).parameters.values())[1 if has_self else 0 :]
    bare_inputs, streaming = _source_facts(fn)
    input_schema, enums = _input_component(params, hints, bare_inputs, input_key)
    if hints.get("return") in (None, type(None)):
        raise SchemaError(f"{fn.__qualname__}() needs a return type annotation")
    output_schema = {**_output_type(hints["return"]), "title": "Output"}

    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    date = {"type": "string", "format": "date-time"}
    components = {
        input_key: input_schema,
        output_key: output_schema,
        **enums,
        request: {
            "title": request,
            "type": "object",
            "properties": {"id": {"title": "Id", "type": "string"}, "input": ref(input_key)},
        },
        response: {
            "title": response,
            "type": "object",
            "properties": {
                "input": ref(input_key),
                "output": ref(output_key),
                "id": {"title": "Id", "type": "string"},
                "version": {"title": "Version", "type": "string"},
                "created_at": {"title": "Created At", **date},
                "started_at": {"title": "Started At", **date},
                "completed_at": {"title": "Completed At", **date},
                "status": {"title": "Status", "type": "string"},
                "error": {"title": "Error", "type": "string"},
                "logs": {"title": "Logs", "type": "string"},
                "metrics": {"title": "Metrics", "type": "object"},
            },
        },
        "Status": {
            "title": "Status",
            "description": "An enumeration.",
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
        },
        "HTTPValidationError": {
            "title": "HTTPValidationError",
            "type": "object",
            "properties": {
                "detail": {"title": "Detail", "type": "array", "items": ref("ValidationError")}
            },
        },
        "ValidationError": {
            "title": "ValidationError",
            "required": ["loc", "msg", "type"],
            "type": "object",
            "properties": {
                "loc": {
                    "title": "Location",
                    "type": "array",
                    "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                },
                "msg": {"title": "Message", "type": "string"},
                "type": {"title": "Error Type", "type": "string"},
            },
        },
    }

    main_op = {
        "summary": "Train" if train else "Predict",
        "description": f"Run a single {noun} on the model",
        "operationId": f"{mode}_{noun}s_post",
        "requestBody": _json_response(ref(request)),
        "responses": {"200": _ok(ref(response)), "422": _VALIDATION_ERROR},
    }
    if not train and streaming:
        main_op["x-cog-streaming"] = True
    id_param = f"{noun}_id"
    cancel_op = {
        "summary": "Cancel",
        "operationId": f"cancel_{noun}s__{id_param}__cancel_post",
        "parameters": [
            {
                "required": True,
                "schema": {"title": _title(id_param), "type": "string"},
                "name": id_param,
                "in": "path",
            }
        ],
        "responses": {"200": _ok(), "422": _VALIDATION_ERROR},
    }
    paths = {
        "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _ok()}}},
        "/health-check": {
            "get": {
                "summary": "Healthcheck",
                "operationId": "healthcheck_health_check_get",
                "responses": {"200": _ok()},
            }
        },
        f"/{noun}s": {"post": main_op},
        f"/{noun}s/{{{id_param}}}/cancel": {"post": cancel_op},
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": cog.__version__},
        "paths": paths,
        "components": {"schemas": components},
    }


def merge_schemas(predict: dict, train: dict) -> dict:
    """Combine both modes like `cog build` with predict and train in cog.yaml.

    As in Go, the predict document wins on name clashes, including choice enums
    that share a parameter name.
    """
    merged = json.loads(json.dumps(predict))
    for section, extra in (
        (merged["paths"], train["paths"]),
        (merged["components"]["schemas"], train["components"]["schemas"]),
    ):
        for key, value in extra.items():
            section.setdefault(key, value)
    return merged


# --- output ------------------------------------------------------------------


def to_json(schema: dict, *, merged: bool = False) -> str:
    """Serialize with Go's byte layout so the file diffs clean against `cog build`.

    Go writes plain maps with sorted keys and keeps insertion order only for
    `paths`, `components.schemas` and `properties`; a merged document is
    re-marshalled from plain maps, so everything is sorted and indented.
    """
    if merged:
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
    else:
        text = json.dumps(_go_order(schema), separators=(",", ":"), ensure_ascii=False)
    # Go's encoder escapes these even inside strings; JSON readers see no difference.
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _go_order(value: Any, ordered: bool = False) -> Any:
    if isinstance(value, list):
        return [_go_order(v) for v in value]
    if not isinstance(value, dict):
        return value
    keys = list(value) if ordered else sorted(value)
    return {
        k: _go_order(value[k], not ordered and k in ("paths", "schemas", "properties"))
        for k in keys
    }


def write_schema(
    ref: str, root: Path, *, mode: str = "predict", train_ref: str | None = None
) -> Path:
    """Write root/.cog/openapi_schema.json for `ref` and return its path.

    With `train_ref` (predict mode only) the file holds both modes, as a
    `cog build` of a cog.yaml with both `predict:` and `train:` does.
    """
    root = Path(root)
    schema = openapi_schema(load_target(ref, root), mode=mode)
    if train_ref is not None:
        if mode != "predict":
            raise SchemaError("train_ref combines with mode='predict' only")
        train = openapi_schema(load_target(train_ref, root), mode="train")
        text = to_json(merge_schemas(schema, train), merged=True)
    else:
        text = to_json(schema)
    out = root / ".cog" / "openapi_schema.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text, encoding="utf-8")
    # Atomic so a server starting in parallel never reads half a file.
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.schema", description=__doc__.split("\n")[0]
    )
    parser.add_argument("ref", help="predictor reference, e.g. predict.py:FluxSchnellPredictor")
    parser.add_argument("--mode", choices=MODES, default="predict")
    parser.add_argument("--train", dest="train_ref", help="also include this train reference")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="project folder (default: .)")
    args = parser.parse_args(argv)
    try:
        path = write_schema(args.ref, args.root, mode=args.mode, train_ref=args.train_ref)
    except (SchemaError, FileNotFoundError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

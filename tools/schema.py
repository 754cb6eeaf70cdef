"""Write `.cog/openapi_schema.json` the way `cog build` does, without Docker or Go.

coglet validates request inputs only against that file, so a local
`python -m cog.server.http` answers bad inputs with 422 only once it exists.
The bytes match cog's Go generator (pkg/schema/openapi_spec.go) for what
predict.py uses: a predictor class with predict() or run(); str, int, float,
bool, cog.Path and cog.Secret inputs, also Optional[...] and list[...] of them; one such
value, a list of them, or a cog.BaseModel of them (train.py's output) as output; train
mode (a train() function) and the merged predict+train document of a cog.yaml with both.
Anything else raises SchemaError rather than write a document that would differ from Go's.

CLI: python -m tools.schema predict.py:Predictor [--train train.py:train] [--root DIR]
"""

import argparse
import ast
import copy
import dataclasses
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


class SchemaError(TypeError):
    """The target cannot be described by this generator's OpenAPI schema."""


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


def _bare_inputs(fn: Any) -> set[str]:
    """Params given as `Input(...)` without `default=`; rejects @cog.streaming.

    Neither leaves a runtime trace (FieldInfo holds default=None either way,
    cog.streaming returns fn unchanged), yet both change Go's output.
    """
    try:
        node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        module = ast.parse(inspect.getsource(inspect.getmodule(fn)))
    except (OSError, TypeError, SyntaxError, IndexError):
        return set()  # no source: every Input() counts as having a default
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return set()
    if any(_called_name(d) == "streaming" for d in node.decorator_list):
        raise SchemaError(f"{fn.__qualname__}: @cog.streaming is not supported by this generator")

    # `prompt: str = Inputs.prompt` shares one module-level Input() between predictors.
    shared = {}
    for stmt in module.body:
        is_class = isinstance(stmt, ast.ClassDef)
        for item in stmt.body if is_class else [stmt]:
            target = item.targets[0] if isinstance(item, ast.Assign) else None
            if isinstance(target, ast.Name):
                shared[f"{stmt.name}.{target.id}" if is_class else target.id] = item.value

    positional = node.args.posonlyargs + node.args.args
    defaulted = positional[len(positional) - len(node.args.defaults) :]
    bare = set()
    for arg, value in zip(defaulted, node.args.defaults, strict=True):
        call = shared.get(ast.unparse(value), value)
        if (
            isinstance(call, ast.Call)
            and _called_name(call) == "Input"
            and not call.args
            and all(k.arg != "default" for k in call.keywords)
        ):
            bare.add(arg.arg)
    return bare


def _called_name(node: ast.expr) -> str | None:
    """`f`, `mod.f` and `f(...)` all name f."""
    node = node.func if isinstance(node, ast.Call) else node
    return getattr(node, "id", None) or getattr(node, "attr", None)


_SCALARS = {bool: "boolean", float: "number", int: "integer", str: "string"}
_SUPPORTED = (
    "str, int, float, bool, cog.Path, cog.Secret, Optional[...] (inputs only) and list[...] "
    "of those"
)


def _json_type(tp: Any, where: str) -> tuple[dict[str, Any], bool]:
    """The inline JSON schema of an annotation, and whether it is Optional."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) != 1:
            raise SchemaError(f"{where}: unions other than Optional[X] are not supported ({tp!r})")
        return {**_json_type(rest[0], where)[0], "nullable": True}, True
    if tp is list or typing.get_origin(tp) is list:
        args = typing.get_args(tp)
        if len(args) != 1:
            raise SchemaError(f"{where}: a list needs one item type, e.g. list[str]")
        items, nullable = _json_type(args[0], where)
        if nullable or "items" in items:
            raise SchemaError(f"{where}: nested generics like List[Optional[X]] are not supported")
        return {"type": "array", "items": items}, False
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}, False
    # Matches both the SDK (os.PathLike means Path) and Go (any type named "Path").
    if isinstance(tp, type) and issubclass(tp, os.PathLike):
        return {"type": "string", "format": "uri"}, False
    if tp is cog.Secret:  # Go: {"type": "string", "format": "password", ...}
        return {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "x-cog-secret": True,
        }, False
    # File, dict, Any, cog.BaseModel, Iterator, Annotated, ... all end here.
    name = tp.__name__ if isinstance(tp, type) else repr(tp).replace("typing.", "")
    raise SchemaError(f"{where}: unsupported type {name}; this generator supports {_SUPPORTED}")


def _title(name: str) -> str:
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_"))


def _json_value(value: Any) -> Any:
    """A default or choice as the Go generator writes it (float64 1.0 prints as 1)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def _input_component(fn: Any) -> tuple[dict, dict[str, dict]]:
    """The Input component, and an enum component for each input with choices."""
    hints = typing.get_type_hints(fn, include_extras=True)  # extras: reject Annotated
    bare_inputs = _bare_inputs(fn)
    properties: dict[str, dict] = {}
    required: list[str] = []
    enums: dict[str, dict] = {}
    params = list(inspect.signature(fn).parameters.values())
    if params and params[0].name == "self":
        params = params[1:]
    for order, param in enumerate(params):
        name, where = param.name, f"input {param.name!r}"
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise SchemaError(f"{where}: *args, **kwargs and keyword-only inputs are not supported")
        if name not in hints:
            raise SchemaError(f"{where} has no type annotation")
        schema, nullable = _json_type(hints[name], where)

        if isinstance(param.default, FieldInfo):
            info, default = param.default, param.default.default
            has_default = name not in bare_inputs
        else:
            info, default = FieldInfo(), param.default
            has_default = default is not param.empty
        # `seed: int = Input(default=None)` means "pick at run time", not a default.
        if has_default and default is None and not nullable:
            has_default = False

        prop: dict[str, Any] = {"x-order": order}
        if info.choices:
            if schema["type"] not in ("string", "integer") or "format" in schema:
                raise SchemaError(f"{where}: choices need a str or int input")
            # Go moves choices into an enum component named after the input.
            enums[name] = {
                "title": name,
                "description": "An enumeration.",
                "enum": [_json_value(c) for c in info.choices],
                "type": schema["type"],
            }
            prop["allOf"] = [_ref(name)]
        else:
            prop.update({"title": _title(name), **schema})
        if info.accept is not None and schema.get("items", schema).get("format") != "uri":
            raise SchemaError(f"{where}: accept is only valid on Path inputs")

        if not has_default and not nullable:
            required.append(name)
        if has_default:
            prop["default"] = _json_value(default)  # may be None: written as null
        optional = {
            "nullable": nullable or None,
            "description": info.description,
            "minimum": info.ge,
            "maximum": info.le,
            "minLength": info.min_length,
            "maxLength": info.max_length,
            "pattern": info.regex,
            "deprecated": info.deprecated or None,
            "x-cog-accept": info.accept,
        }
        prop.update((k, _json_value(v)) for k, v in optional.items() if v is not None)
        properties[name] = prop

    component: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        component["required"] = required
    return component, enums


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


# Everything but Input, Output and the choice enums is the same for every predictor.
# fmt: off
_STR, _DATE = {"type": "string"}, {"type": "string", "format": "date-time"}
_OK = {"description": "Successful Response", **_json({})}
_422 = {"description": "Validation Error", **_json(_ref("HTTPValidationError"))}
_FIXED_SCHEMAS = {
    "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
        "id": {"title": "Id", **_STR}, "input": _ref("Input")}},
    "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
        "input": _ref("Input"), "output": _ref("Output"), "id": {"title": "Id", **_STR},
        "version": {"title": "Version", **_STR}, "created_at": {"title": "Created At", **_DATE},
        "started_at": {"title": "Started At", **_DATE},
        "completed_at": {"title": "Completed At", **_DATE}, "status": {"title": "Status", **_STR},
        "error": {"title": "Error", **_STR}, "logs": {"title": "Logs", **_STR},
        "metrics": {"title": "Metrics", "type": "object"}}},
    "Status": {"title": "Status", "description": "An enumeration.", "enum": [
        "starting", "processing", "succeeded", "canceled", "failed"], "type": "string"},
    "HTTPValidationError": {"title": "HTTPValidationError", "type": "object", "properties": {
        "detail": {"title": "Detail", "type": "array", "items": _ref("ValidationError")}}},
    "ValidationError": {"title": "ValidationError", "required": ["loc", "msg", "type"],
                        "type": "object", "properties": {
        "loc": {"title": "Location", "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
        "msg": {"title": "Message", **_STR}, "type": {"title": "Error Type", **_STR}}},
}
_PATHS = {
    "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": _OK}}},
    "/health-check": {"get": {"summary": "Healthcheck",
                              "operationId": "healthcheck_health_check_get",
                              "responses": {"200": _OK}}},
    "/predictions": {"post": {
        "summary": "Predict", "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": _json(_ref("PredictionRequest")),
        "responses": {"200": {"description": "Successful Response",
                              **_json(_ref("PredictionResponse"))}, "422": _422}}},
    "/predictions/{prediction_id}/cancel": {"post": {
        "summary": "Cancel", "operationId": "cancel_predictions__prediction_id__cancel_post",
        "parameters": [{"required": True, "schema": {"title": "Prediction Id", **_STR},
                        "name": "prediction_id", "in": "path"}],
        "responses": {"200": _OK, "422": _422}}},
}
# fmt: on


def _output_type(returns: Any) -> dict:
    """An output annotation; a cog.BaseModel subclass is an object of its fields (Go's
    SchemaObject: properties in field order, required when without a default)."""
    if isinstance(returns, type) and issubclass(returns, cog.BaseModel):
        properties, required = {}, []
        for f in dataclasses.fields(returns):
            schema, nullable = _json_type(f.type, f"output field {f.name!r}")
            properties[f.name] = {**schema, "title": _title(f.name)}
            no_default = (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            if no_default and not nullable:
                required.append(f.name)
        return {
            "type": "object",
            "properties": properties,
            **({"required": required} if required else {}),
        }
    output, optional = _json_type(returns, "output")
    if optional:
        raise SchemaError("output must not be Optional")
    return output


# Train mode renames the endpoint and the components (Go: buildOpenAPISpec's isTrain).
_TRAIN_NAMES = {
    "/predictions": "/trainings",
    "/predictions/{prediction_id}/cancel": "/trainings/{training_id}/cancel",
    "Predict": "Train",
    "Run a single prediction on the model": "Run a single training on the model",
    "predict_predictions_post": "train_trainings_post",
    "cancel_predictions__prediction_id__cancel_post": "cancel_trainings__training_id__cancel_post",
    "prediction_id": "training_id",
    "Prediction Id": "Training Id",
    "PredictionRequest": "TrainingRequest",
    "PredictionResponse": "TrainingResponse",
    "#/components/schemas/PredictionRequest": "#/components/schemas/TrainingRequest",
    "#/components/schemas/PredictionResponse": "#/components/schemas/TrainingResponse",
    "#/components/schemas/Input": "#/components/schemas/TrainingInput",
    "#/components/schemas/Output": "#/components/schemas/TrainingOutput",
}


def _renamed(value: Any) -> Any:
    if isinstance(value, dict):
        return {_TRAIN_NAMES.get(k, k): _renamed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v) for v in value]
    return _TRAIN_NAMES.get(value, value) if isinstance(value, str) else value


def openapi_schema(target: object, mode: str = "predict") -> dict:
    """The OpenAPI document `cog build` would write for `target`: a predictor class, or
    in train mode a train() function (or a class with train())."""
    fn = _entry_point(target, mode)
    input_schema, enums = _input_component(fn)
    returns = typing.get_type_hints(fn, include_extras=True).get("return")
    if returns in (None, type(None)):
        raise SchemaError(f"{fn.__qualname__}() needs a return type annotation")
    output = {**_output_type(returns), "title": "Output"}
    # Copies, so callers may edit the result without touching the constants.
    paths, fixed = copy.deepcopy(_PATHS), copy.deepcopy(_FIXED_SCHEMAS)
    if mode == "train":
        input_schema = {**input_schema, "title": "TrainingInput"}
        schemas = {"TrainingInput": input_schema, "TrainingOutput": output, **enums}
        paths, fixed = _renamed(paths), _renamed(fixed)
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


def to_json_indented(schema: dict) -> str:
    """The merged document's bytes: Go re-reads both documents into plain maps and writes
    them with json.MarshalIndent(v, "", "  "), so every key is sorted and indented."""
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def to_json(schema: dict) -> str:
    """Serialize with Go's byte layout so the file diffs clean against `cog build`.

    Go writes plain maps with sorted keys and keeps insertion order only for
    `paths`, `components.schemas` and `properties`.
    """
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
        prog="python -m tools.schema", description=__doc__.split("\n")[0]
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


if __name__ == "__main__":
    sys.exit(main())

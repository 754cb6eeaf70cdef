"""How predict.py's and train.py's signatures become the Input and Output components,
as cog's Go generator writes them: types, titles, defaults, ranges, choices, order."""

import ast
import dataclasses
import inspect
import os
import textwrap
import types
import typing
from typing import Any

import cog
from cog import FieldInfo


class SchemaError(TypeError):
    """The target cannot be described by this generator's OpenAPI schema."""


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


def input_component(fn: Any) -> tuple[dict, dict[str, dict]]:
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
            prop["allOf"] = [ref(name)]
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


def output_type(returns: Any) -> dict:
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


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}

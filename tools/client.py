"""`script/predict`: one prediction through the real Cog server, like `cog predict`.

Same flags and output names as `cog predict`: `-i key=value` (repeatable,
`@file` uploads a file), `-o PATH`; a single output is written to `output.<ext>`,
a list to `output.0.<ext>`, `output.1.<ext>`...
"""

from __future__ import annotations

import argparse
import base64
import mimetypes
import sys
from pathlib import Path

from models.specs import SPECS
from tools.select import selected_model
from tools.server import http_json, model_ref, predict, running

_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}


def _property_type(prop: dict, schema: dict) -> str:
    for ref in prop.get("allOf", []):  # choices live in a referenced enum
        name = ref["$ref"].rsplit("/", 1)[-1]
        return schema["components"]["schemas"][name].get("type", "string")
    return prop.get("type", "string")


def _file_data_uri(path: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise SystemExit(f"Input file not found: {file}")
    mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(file.read_bytes()).decode()}"


def _convert(name: str, raw: str, kind: str):
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        raise SystemExit(f"-i {name}={raw}: {name} must be a {kind}") from None
    if kind == "boolean":
        if raw.lower() not in _TRUE | _FALSE:
            raise SystemExit(f"-i {name}={raw}: {name} must be true or false")
        return raw.lower() in _TRUE
    return raw


def parse_inputs(pairs: list[str], schema: dict) -> dict:
    properties = schema["components"]["schemas"]["Input"]["properties"]
    inputs: dict = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"Failed to parse input '{pair}', expected format is 'name=value'")
        if name not in properties:
            raise SystemExit(f"Unknown input {name!r}. Inputs: {', '.join(properties)}")
        prop = properties[name]
        if raw.startswith("@"):
            value = _file_data_uri(raw[1:])
        else:
            kind = _property_type(prop, schema)
            item_kind = prop.get("items", {}).get("type", "string") if kind == "array" else kind
            value = _convert(name, raw, item_kind)
        if prop.get("type") == "array":
            inputs.setdefault(name, []).append(value)
        else:
            inputs[name] = value
    return inputs


def _write_data_uri(uri: str, dest: Path, *, add_extension: bool) -> Path:
    header, _, payload = uri.partition(",")
    if add_extension:
        mime = header.removeprefix("data:").split(";")[0]
        ext = {"image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png"}.get(mime)
        dest = dest.with_name(dest.name + (ext or mimetypes.guess_extension(mime) or ""))
    dest.write_bytes(base64.b64decode(payload))
    return dest


def write_outputs(output, dest: Path) -> list[Path]:
    """cog predict's naming: a list becomes <stem>.<i><ext>; no extension given, the
    file type's is added."""
    add = not dest.suffix
    if isinstance(output, list):
        return [
            _write_data_uri(
                item, dest.with_name(f"{dest.stem}.{i}{dest.suffix}"), add_extension=add
            )
            for i, item in enumerate(output)
        ]
    if isinstance(output, str) and output.startswith("data:"):
        return [_write_data_uri(output, dest, add_extension=add)]
    print(output)
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SPECS), help="default: the one in cog.yaml")
    parser.add_argument("-i", "--input", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("-o", "--output", default="output", help="output path (default: output)")
    args = parser.parse_args(argv)
    model = args.model or selected_model()
    ref, env = model_ref(model)
    print(f"Starting the Cog server for {model}...", file=sys.stderr)
    with running(ref, env=env) as url:
        _, schema = http_json("GET", f"{url}/openapi.json")
        inputs = parse_inputs(args.input, schema)
        print(f"Running prediction with {sorted(inputs)}", file=sys.stderr)
        status, body = predict(url, inputs)
    if body.get("logs"):
        print(body["logs"].rstrip(), file=sys.stderr)
    if status == 422:
        for detail in body.get("detail", []):
            field = detail.get("loc", ["?"])[-1]
            print(f"Invalid input {field}: {detail.get('msg')}", file=sys.stderr)
        return 1
    if body.get("status") != "succeeded":
        print(f"Prediction failed: {body.get('error')}", file=sys.stderr)
        return 1
    for path in write_outputs(body.get("output"), Path(args.output)):
        print(f"Written output to: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`script/predict`: one prediction through the real Cog server, like `cog run` (called
`cog predict` before Cog 0.20).

Flags as in `cog run`: `-i key=value` (repeatable; `-i image=@photo.jpg` uploads a
file) and `-o PATH`.

Output names: a list of files is written as PATH.0.EXT, PATH.1.EXT..., a single file as
PATH.EXT (PATH defaults to "output"). EXT is always the file's real type (webp, jpg,
png), whatever extension PATH has: `-o cat.webp -i output_format=png` writes cat.0.png,
and says so. A folder in PATH is created before the prediction runs.
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
        article = "an" if kind[0] in "aeiou" else "a"
        raise SystemExit(f"-i {name}={raw}: {name} must be {article} {kind}") from None
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


_EXTENSIONS = {"image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png"}
_KNOWN_SUFFIXES = {".jpeg", *_EXTENSIONS.values()}


def _write_data_uri(uri: str, dest: Path) -> Path:
    """Write a data: URI to `dest` with the extension of its real type."""
    header, _, payload = uri.partition(",")
    mime = header.removeprefix("data:").split(";")[0]
    ext = _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ""
    path = dest.with_name(dest.name + ext)
    path.write_bytes(base64.b64decode(payload))
    return path


def write_outputs(output, dest: Path) -> list[Path]:
    """cog run's naming (module docstring): <stem>.<i><real ext> for a list,
    <stem><real ext> for one file, where <stem> is `dest` without its extension."""
    stem = dest.with_suffix("") if dest.suffix.lower() in _KNOWN_SUFFIXES else dest
    if isinstance(output, list):
        paths = [_write_data_uri(item, stem.with_name(f"{stem.name}.{i}"))
                 for i, item in enumerate(output)]  # fmt: skip
    elif isinstance(output, str) and output.startswith("data:"):
        paths = [_write_data_uri(output, stem)]
    else:
        print(output)
        return []
    if stem != dest and any(p.suffix != dest.suffix for p in paths):
        print(
            f"-o {dest} asked for {dest.suffix}, but the output is "
            f"{paths[0].suffix.lstrip('.').upper()}: named by its real type.",
            file=sys.stderr,
        )
    return paths


def error_message(error) -> str:
    """coglet wraps a predictor's error as "Prediction failed: Prediction failed:
    InputError: <message>": the message, once."""
    text = str(error)
    while text.startswith("Prediction failed: "):
        text = text.removeprefix("Prediction failed: ")
    name, sep, rest = text.partition(": ")
    if sep and name.isidentifier() and name.endswith(("Error", "Exception")):
        text = rest
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="script/predict",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", choices=sorted(SPECS), help="default: the one in cog.yaml")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input, repeatable: -i prompt='a cat' -i seed=1; KEY=@FILE uploads a file",
    )
    parser.add_argument(
        "-o", "--output", default="output", help="output path, see below (default: output)"
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    try:  # before the prediction runs, not after, when its result would be lost
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SystemExit(f"-o {output}: cannot create {output.parent} ({err.strerror}).") from None
    model = args.model or selected_model()
    ref, env = model_ref(model)
    print(f"Starting the Cog server for {model}...", file=sys.stderr)
    # The server exists for this one request: after Ctrl-C nobody waits for its result.
    with running(ref, env=env, grace_s=0) as url:
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
        print(f"Prediction failed: {error_message(body.get('error'))}", file=sys.stderr)
        return 1
    for path in write_outputs(body.get("output"), output):
        print(f"Written output to: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("Interrupted: the prediction was cancelled.", file=sys.stderr)
        sys.exit(130)

"""Serve a model with the real Cog HTTP server on localhost: `script/serve`."""

from __future__ import annotations

import argparse
import os
import sys

from models.specs import SPECS
from tools.schema import write_schema
from tools.select import selected_model
from tools.server import REPO, command, model_ref, server_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SPECS), help="default: the one in cog.yaml")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    model = args.model or selected_model()
    ref, env = model_ref(model)
    write_schema(ref, REPO)  # where `cog build` puts it: coglet reads it from its cwd
    print(f"Serving {model} ({ref}) on http://{args.host}:{args.port}", file=sys.stderr)
    print(
        "Wrote .cog/openapi_schema.json: inputs are validated like a cog build image.",
        file=sys.stderr,
    )
    os.chdir(REPO)
    cmd = command(args.host)
    os.execve(cmd[0], cmd, server_env(ref, args.port, extra=env))


if __name__ == "__main__":
    main()

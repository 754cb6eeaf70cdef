"""Serve a model with the real Cog HTTP server on localhost: `script/serve`."""

from __future__ import annotations

import argparse
import os
import sys

from models.specs import SPECS
from tools.schema import write_schema
from tools.select import TRAIN_REF, selected_model
from tools.server import REPO, command, model_ref, server_env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SPECS), help="default: the one in cog.yaml")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--train", action="store_true", help="serve POST /trainings (train.py)")
    args = parser.parse_args(argv)
    model = args.model or selected_model()
    ref, env = model_ref(model)
    # Where `cog build` puts it (coglet reads it from its cwd), as cog.yaml's keys make it.
    write_schema(ref, REPO, train_ref=TRAIN_REF)
    ref = TRAIN_REF if args.train else ref
    print(f"Serving {model} ({ref}) on http://{args.host}:{args.port}", file=sys.stderr)
    print(
        "Wrote .cog/openapi_schema.json: inputs are validated like a cog build image.",
        file=sys.stderr,
    )
    os.chdir(REPO)
    cmd = command(args.host, train=args.train)
    os.execve(cmd[0], cmd, server_env(ref, args.port, extra=env, train=args.train))


if __name__ == "__main__":
    main()

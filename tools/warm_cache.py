"""`script/warm-cache [MODEL]`: compile the go_fast model once and save the compiler's
artifacts to compile-cache/, so the image `cog push` builds starts without compiling.

Run it on the GPU kind you deploy to: artifacts are specific to the GPU and the torch
version (the file name says which), and torch ignores ones made elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time

from models.log import to_stdout
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import SPECS, get_spec
from tools.select import selected_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", choices=sorted(SPECS), help="default: cog.yaml's")
    args = parser.parse_args(argv)
    to_stdout()
    settings = load_settings()
    spec = get_spec(args.model or selected_model())
    started = time.perf_counter()
    model = DiffusionModel(spec, settings)
    if model.engine.fast is None or not model.engine.fast_plan.compile:
        print(
            f"Nothing to warm: go_fast here is {model.engine.fast_plan.describe()}. Run this on "
            "the GPU you deploy to (COMPILE=on forces compiling on a CPU, whose cache only "
            "helps CPUs).",
            file=sys.stderr,
        )
        return 1
    folder = settings.compile_cache_dir
    print(
        f"Compile cache for {spec.name} written to {folder}/ in "
        f"{time.perf_counter() - started:.0f}s; `cog push` now ships it.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`script/bench`: where time and memory go, printed as JSON (never asserted in tests).

With no flag, each variant's end-to-end figures (tools/bench/e2e.py); each flag measures
one other thing (`script/bench --help`), in the module of its name beside this one."""

from __future__ import annotations

import argparse
import json
import sys

from models.specs import SPECS
from tools.bench.e2e import bench, bench_training
from tools.bench.inputs import request_inputs

MINI_MODELS = [name for name in SPECS if name.startswith("mini-")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="script/bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", help="default: tiny-flux-schnell and mid-flux-schnell (soak: tiny)"
    )
    parser.add_argument("--megapixels", default="0.25", choices=["1", "0.25"])
    parser.add_argument("--steps", type=int, help="default: the variant's default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lora", action="store_true", help="LoRA load and request costs")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument(
        "--lora-compile",
        action="store_true",
        help="with --lora: also count recompiles over 10 swaps on the compiled go_fast model "
        "(compiles on a CPU too: minutes)",
    )
    parser.add_argument(
        "--go-fast",
        action="store_true",
        help="compiled/fp8 vs eager: step time, recompiles over all sizes, cold start with and "
        "without the compile cache, fp8 bytes and cosine (compiles on a CPU too: minutes)",
    )
    parser.add_argument("--fp8", choices=["auto", "on", "off"], default="auto")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="real FLUX.1/SDXL architectures with random weights on the GPU, 1024x1024: "
        "seconds per image eager vs compiled vs compiled+fp8, peak GPU memory (models: "
        "flux-schnell, flux-dev, sdxl)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="each stage's seconds and share of predict time (use --megapixels 1)",
    )
    parser.add_argument(
        "--quality",
        action="store_true",
        help="mini models (default: every mini-* variant): accuracy of what they draw for "
        "held-out prompts, read back by models/mini/judge.py",
    )
    parser.add_argument("--train", action="store_true", help="LoRA training figures instead")
    parser.add_argument("--train-resolution", type=int, default=512)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="instead: N varied requests through one server, in a random order, printing "
        "RSS (the curve) and disk growth",
    )
    parser.add_argument(
        "--step-cache",
        action="store_true",
        help="instead: the step cache's calls, time and pixel difference (default model: "
        "tiny-flux-dev); for mini-* models, held-out accuracy with and without it",
    )
    parser.add_argument(
        "--soak-heaviest-first",
        action="store_true",
        help="the soak's first three requests are the heaviest of each mode",
    )
    args = parser.parse_args(argv)
    if args.step_cache:
        from tools.bench.cache import bench_step_cache, bench_step_cache_quality

        for model in args.models or ["tiny-flux-dev"]:
            if model.startswith("mini-"):
                result = bench_step_cache_quality(model, steps=args.steps or 28)
            else:
                result = bench_step_cache(model, steps=args.steps or 28, runs=args.runs)
            print(json.dumps(result), flush=True)
        return
    if args.soak:
        from tools.bench.soak import soak

        for model in args.models or ["tiny-flux-schnell"]:
            result = soak(model, args.soak, heaviest_first=args.soak_heaviest_first)
            print(json.dumps(result), flush=True)
        return
    default = MINI_MODELS if args.quality else ["tiny-flux-schnell", "mid-flux-schnell"]
    for model in args.models or default:
        print(f"Benchmarking {model}...", file=sys.stderr)
        if args.quality:
            from tools.bench.quality import bench_quality

            result = bench_quality(model)
        elif args.train:
            result = bench_training(model, resolution=args.train_resolution, steps=args.train_steps)
        elif args.full_size:
            from tools.bench.full import bench_full

            result = bench_full(model, runs=args.runs, steps=args.steps)
        elif args.stages:
            from tools.bench.stages import bench_stages

            inputs = request_inputs(model, megapixels=args.megapixels, steps=args.steps)
            result = bench_stages(model, inputs, runs=args.runs, go_fast=True)
        elif args.go_fast:
            from tools.bench.fast import bench_go_fast

            inputs = request_inputs(model, megapixels=args.megapixels, steps=args.steps)
            result = bench_go_fast(model, inputs, runs=args.runs, fp8=args.fp8)
        elif args.lora:
            from tools.bench.lora import bench_lora

            inputs = request_inputs(model, megapixels=args.megapixels, steps=args.steps)
            result = bench_lora(
                model, inputs, runs=args.runs, rank=args.lora_rank, compile_it=args.lora_compile
            )
        else:
            result = bench(model, megapixels=args.megapixels, steps=args.steps, runs=args.runs)
        print(json.dumps(result), flush=True)


main()

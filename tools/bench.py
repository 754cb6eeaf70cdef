"""`script/bench`: where prediction time goes, printed as JSON (never asserted in tests).

For each variant: weights build/fetch time, server setup time (start to READY),
end-to-end prediction time through the real Cog server, the bare diffusers
pipeline call with the same arguments in this process, their ratio (our
overhead), and the safety check's share of prediction time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import replace

import torch

from models import requests
from models.families import FAMILIES
from models.resolver import resolve
from models.settings import load_settings
from models.specs import get_spec
from tools.server import model_ref, predict, running


def _timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def bench_server(model: str, inputs: dict, runs: int) -> dict:
    ref, env = model_ref(model)
    started = time.perf_counter()
    with running(ref, env=env) as url:
        setup_s = time.perf_counter() - started
        predict(url, inputs)  # warm-up: first-call allocations, lazy imports
        bodies = []
        wall = _timed(lambda: bodies.append(predict(url, inputs)[1]), runs)
    failed = [b for b in bodies if b.get("status") != "succeeded"]
    if failed:
        raise SystemExit(f"Prediction failed: {failed[0].get('error')}")
    pattern = re.compile(r"Safety check took ([\d.]+)s")
    safety = [float(m) for b in bodies for m in pattern.findall(b["logs"])]
    predict_time = statistics.median(b["metrics"]["predict_time"] for b in bodies)
    return {
        "setup_s": round(setup_s, 3),
        "server_e2e_s": round(statistics.median(wall), 3),
        "coglet_predict_time_s": round(predict_time, 3),
        "safety_s": round(statistics.median(safety), 3) if safety else None,
        "safety_share": round(statistics.median(safety) / predict_time, 3) if safety else None,
    }


def bench_bare(model: str, inputs: dict, runs: int) -> dict:
    """The diffusers pipeline alone, called with exactly the arguments our engine passes."""
    spec = get_spec(model)
    family = FAMILIES[spec.family]
    # Safety checking is measured through the server; the bare call has none.
    served = family(spec, replace(load_settings(), safety_checker=False))
    job = family.plan(spec, family.inputs(**inputs))
    pipe, engine = served.engine.pipes[job.mode], served.engine

    def call():
        with torch.inference_mode():
            pipe(**engine.base_kwargs(job, requests.seeded_generator(job.seed)))

    call()  # warm-up
    return {
        "device": engine.device,
        "size": f"{job.width}x{job.height}",
        "steps": job.steps,
        "bare_pipeline_s": round(statistics.median(_timed(call, runs)), 3),
    }


def size_inputs(family: str, megapixels: str) -> dict:
    if family == "sdxl":  # SDXL takes width and height rather than megapixels
        side = 1024 if megapixels == "1" else 512
        return {"width": side, "height": side}
    return {"megapixels": megapixels}


def bench(model: str, *, megapixels: str, steps: int | None, runs: int) -> dict:
    spec = get_spec(model)
    inputs = {"prompt": "a cat in a hat", "seed": 1, **size_inputs(spec.family, megapixels)}
    inputs["num_inference_steps"] = steps or spec.default_steps
    settings = load_settings()
    started = time.perf_counter()
    for entry in spec.weight_entries(safety=settings.safety_checker):
        resolve(entry, settings)
    result = {"model": model, "runs": runs, "weights_s": round(time.perf_counter() - started, 3)}
    # The server first: its process, and its copy of the model, is gone before this
    # process loads one (two copies of FLUX.1-dev would not fit one GPU).
    result |= bench_server(model, inputs, runs)
    result |= bench_bare(model, inputs, runs)
    result["overhead_ratio"] = round(result["server_e2e_s"] / result["bare_pipeline_s"], 3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", help="default: tiny-flux-schnell and mid-flux-schnell (soak: tiny)"
    )
    parser.add_argument("--megapixels", default="0.25", choices=["1", "0.25"])
    parser.add_argument("--steps", type=int, help="default: the variant's default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--soak",
        type=int,
        metavar="N",
        help="instead: N varied requests through one server, printing RSS and disk growth",
    )
    args = parser.parse_args(argv)
    if args.soak:
        from tools.soak import soak

        for model in args.models or ["tiny-flux-schnell"]:
            print(json.dumps(soak(model, args.soak)), flush=True)
        return
    for model in args.models or ["tiny-flux-schnell", "mid-flux-schnell"]:
        print(f"Benchmarking {model}...", file=sys.stderr)
        result = bench(model, megapixels=args.megapixels, steps=args.steps, runs=args.runs)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

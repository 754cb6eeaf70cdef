"""`script/bench`: where prediction time goes, printed as JSON (never asserted in tests).

`--train`: LoRA training steps per second and peak memory instead.

For each variant: weights build/fetch time, server setup time (start to READY),
end-to-end prediction time through the real Cog server, the bare diffusers
pipeline call with the same arguments in this process, their ratio (our
overhead), and the safety check's share of prediction time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tarfile
import time
from dataclasses import replace

import torch

from models.request.job import seeded_generator
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import SPECS, get_spec
from models.weights.resolver import resolve
from tools.server import model_ref, predict, running

MINI_MODELS = [name for name in SPECS if name.startswith("mini-")]


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
    served = DiffusionModel(spec, replace(load_settings(), safety_checker=False))
    job = family.plan(spec, family.inputs(**inputs))
    pipe, engine = served.engine.pipes[job.mode], served.engine

    def call():
        with torch.inference_mode():
            pipe(**engine.call_args(job, seeded_generator(job.seed)))

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


def request_inputs(model: str, *, megapixels: str, steps: int | None) -> dict:
    spec = get_spec(model)
    inputs = {"prompt": "a cat in a hat", "seed": 1, **size_inputs(spec.family, megapixels)}
    inputs["num_inference_steps"] = steps or spec.default_steps
    return inputs


def bench(model: str, *, megapixels: str, steps: int | None, runs: int) -> dict:
    spec = get_spec(model)
    inputs = request_inputs(model, megapixels=megapixels, steps=steps)
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


def bench_training(model: str, *, resolution: int, steps: int) -> dict:
    """LoRA training steps per second (after one warm-up step) and peak memory: GPU memory
    allocated on CUDA; on CPU the process's peak resident memory so far (it cannot be
    reset, so bench one model per command there)."""
    import tempfile
    from pathlib import Path

    from PIL import Image

    from models.train.config import TrainInputs, plan
    from models.train.loop import train

    spec = get_spec(model)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    archive = work / "images.tar"
    with tarfile.open(archive, "w") as tar:
        for index, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
            Image.new("RGB", (resolution, resolution), colour).save(work / f"{index}.png")
            tar.add(work / f"{index}.png", arcname=f"{index}.png")
    inputs = TrainInputs(input_images=archive, steps=steps, resolution=str(resolution), seed=1,
                         autocaption=False, samples=0, checkpoint_every=0)  # fmt: skip
    settings = replace(load_settings(), safety_checker=False)
    result = train(spec, settings, plan(spec, inputs), archive, work / "out")
    shutil.rmtree(work, ignore_errors=True)
    return {
        "model": model,
        "train_resolution": resolution,
        "train_steps": steps,
        "train_steps_per_s": round(result.steps_per_second or 0.0, 4),
        "train_peak_memory_gb": round(result.peak_memory_gb, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        help="instead: N varied requests through one server, printing RSS and disk growth",
    )
    args = parser.parse_args(argv)
    if args.soak:
        from tools.bench.soak import soak

        for model in args.models or ["tiny-flux-schnell"]:
            print(json.dumps(soak(model, args.soak)), flush=True)
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


if __name__ == "__main__":
    main()

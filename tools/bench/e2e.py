"""`script/bench` without a flag: for each variant, weights build/fetch time, server
setup time (start to READY), end-to-end prediction time through the real Cog server, the
bare diffusers pipeline call with the same arguments in this process, their ratio (our
overhead), and the safety check's share of prediction time. With `--train`
(bench_training): LoRA training steps per second and peak memory instead."""

from __future__ import annotations

import base64
import re
import shutil
import statistics
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from models.loras.source import Tokens
from models.request.job import seeded_generator
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from models.weights.resolver import resolve
from tools.bench.inputs import request_inputs
from tools.server import model_ref, predict, running


def _timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def _as_json(inputs: dict) -> dict:
    """A request's files as data: URIs, as a client without an upload URL sends them."""
    return {
        k: f"data:image/png;base64,{base64.b64encode(v.read_bytes()).decode()}"
        if isinstance(v, Path)
        else v
        for k, v in inputs.items()
    }


def bench_server(model: str, inputs: dict, runs: int) -> dict:
    inputs = _as_json(inputs)
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
    family = FAMILIES[spec.interface]
    # Safety checking is measured through the server; the bare call has none.
    served = DiffusionModel(spec, replace(load_settings(), safety_checker=False))
    job = family.plan(spec, family.inputs(**inputs))
    engine = served.engine

    def call():
        # The pipeline the server's request runs, in the engine's request context.
        with engine.request(job, Tokens()) as (pipe, *_), torch.inference_mode():
            prepared, extra = engine.prepare(job)  # a control map, Redux's embeddings
            pipe(**{**engine.call_args(prepared, seeded_generator(job.seed)), **extra})

    call()  # warm-up
    return {
        "device": engine.device,
        "size": f"{job.width}x{job.height}",
        "steps": job.steps,
        "bare_pipeline_s": round(statistics.median(_timed(call, runs)), 3),
    }


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

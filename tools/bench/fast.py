"""`script/bench --go-fast`: what go_fast gains, each figure a ratio measured in one run on
one variant.

- step: one transformer/UNet call (median), eager vs go_fast;
- recompiles_all_sizes: graphs compiled after warm-up over every output size, img2img,
  inpainting and 1-4 outputs (0 is the goal);
- cold start: setup in a fresh process with an empty compile cache, then with the cache
  the first one saved; and the eager setup vs reading the weights' bytes from disk;
- fp8 (when go_fast uses it here): the quantized layers' weight bytes vs the eager ones,
  and the output's cosine to go_fast=false's.

On a CPU COMPILE=on forces compiling (minutes for a tiny model): the ratios are still real.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.engine.fast import linear_weight_bytes
from models.request.sizes import ASPECT_RATIOS
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from models.weights.resolver import resolve
from tools.bench.inputs import size_inputs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_seconds(model, inputs: dict, *, go_fast: bool, runs: int) -> float:
    """Median seconds of one transformer/UNet call within real requests."""
    engine = model.engine
    denoiser = engine.fast.model if go_fast and engine.fast else engine.eager
    times, forward = [], denoiser.forward

    def timed(*args, **kwargs):
        _sync(engine.device)
        started = time.perf_counter()
        out = forward(*args, **kwargs)
        _sync(engine.device)
        times.append(time.perf_counter() - started)
        return out

    denoiser.forward = timed
    try:
        for _ in range(runs):
            model.predict(model.inputs(**inputs, go_fast=go_fast))
    finally:
        del denoiser.forward  # the class's forward again
    return statistics.median(times)


def size_requests(family: str, image: Path) -> list[dict]:
    """Every output size a user can ask for, both image modes, and 1-4 outputs."""
    sizes = [size_inputs(family, r, m) for r in ASPECT_RATIOS for m in ("1", "0.25")]
    if family == "sdxl":  # guidance off halves the UNet's batch: its own graph
        sizes.append(dict(guidance_scale=1.0))
    requests = [dict(size, num_outputs=1 + i % 4) for i, size in enumerate(sizes)]
    mask = image.with_name("mask.png")
    Image.new("L", Image.open(image).size, 255).save(mask)
    # Full strength: one step of an image request must stay a step (SDXL rounds down).
    image_modes = [dict(image=image), dict(image=image, mask=mask, num_outputs=2)]
    return requests + [dict(mode, prompt_strength=1.0) for mode in image_modes]


def recompiles(model, base: dict, folder: Path) -> int:
    import torch._dynamo.utils as dynamo_utils

    image = folder / "input.png"
    Image.new("RGB", (600, 440), (120, 80, 200)).save(image)
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    for request in size_requests(model.spec.family, image):
        model.predict(model.inputs(**{**base, **request, "num_inference_steps": 1}, go_fast=True))
    return dynamo_utils.counters["stats"]["unique_graphs"] - before


def fp8_figures(model, inputs: dict) -> dict:
    def image(go_fast: bool) -> np.ndarray:
        path = model.predict(model.inputs(**inputs, output_format="png", go_fast=go_fast))[0]
        return np.asarray(Image.open(path), dtype=np.float64).ravel() / 127.5 - 1

    fast, eager = image(True), image(False)
    engine = model.engine
    fp8_bytes, full_bytes = (linear_weight_bytes(m) for m in (engine.fast.model, engine.eager))
    return {
        "fp8_weight_bytes_ratio": round(fp8_bytes / full_bytes, 3),
        "fp8_output_cosine": round(
            float(fast @ eager / np.linalg.norm(fast) / np.linalg.norm(eager)), 4
        ),
    }


def setup_in_fresh_process(model_name: str, env: dict[str, str]) -> float:
    """Seconds from start to ready, in a new process (no in-memory compiler state)."""
    code = "import sys; from tools.bench.fast import _setup; _setup(sys.argv[1])"
    done = subprocess.run(
        [sys.executable, "-c", code, model_name],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["setup_s"]


def _setup(model_name: str) -> None:
    spec = get_spec(model_name)
    started = time.perf_counter()
    DiffusionModel(spec, load_settings())
    print(json.dumps({"setup_s": round(time.perf_counter() - started, 3)}))


def read_seconds(folder: Path) -> tuple[float, int]:
    started, total = time.perf_counter(), 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            total += len(path.read_bytes())
    return time.perf_counter() - started, total


def bench_go_fast(model_name: str, inputs: dict, *, runs: int, fp8: str) -> dict:
    spec = get_spec(model_name)
    folder = Path(tempfile.mkdtemp(prefix="bench-fast-"))
    env = {"COMPILE": "on", "FP8": fp8, "SAFETY_CHECKER": "0",
           "COMPILE_CACHE_DIR": str(folder / "compile-cache")}  # fmt: skip
    result = {"model": model_name}
    # Each process gets an empty inductor cache of its own, as a new container does: the
    # second start has only what the first saved in COMPILE_CACHE_DIR.
    cold = lambda n: {**env, "TORCHINDUCTOR_CACHE_DIR": str(folder / f"inductor-{n}")}  # noqa: E731
    result["cold_start_no_cache_s"] = setup_in_fresh_process(model_name, cold(1))
    result["cold_start_with_cache_s"] = setup_in_fresh_process(model_name, cold(2))
    result["cold_start_cache_ratio"] = round(
        result["cold_start_with_cache_s"] / result["cold_start_no_cache_s"], 3
    )
    eager_env = {**cold(3), "COMPILE": "off", "FP8": "off"}
    result["eager_setup_s"] = setup_in_fresh_process(model_name, eager_env)
    read_s, read_bytes = read_seconds(resolve(spec.weights, load_settings()))
    result |= {"weights_read_s": round(read_s, 3), "weights_bytes": read_bytes,
               "eager_setup_vs_read_ratio": round(result["eager_setup_s"] / read_s, 1)}  # fmt: skip
    settings = replace(load_settings(), safety_checker=False, compile="on", fp8=fp8,
                       compile_cache_dir=folder / "compile-cache")  # fmt: skip
    model = DiffusionModel(spec, settings)
    result["go_fast"] = model.engine.fast_plan.describe()
    eager = step_seconds(model, inputs, go_fast=False, runs=runs)
    fast = step_seconds(model, inputs, go_fast=True, runs=runs)
    result |= {"eager_step_s": round(eager, 4), "go_fast_step_s": round(fast, 4),
               "go_fast_step_ratio": round(fast / eager, 3)}  # fmt: skip
    result["recompiles_all_sizes"] = recompiles(model, inputs, folder)
    if model.engine.fast_plan.fp8:
        result |= fp8_figures(model, inputs)
    return result

"""`script/bench --stages`: where one request's time goes, as seconds and shares of the
predict time (1 megapixel by default).

Stages: text encoding, denoising (the transformer/UNet calls), VAE decode, the safety
check, image encoding, and base64 of the files (what the server sends back without an
upload URL; coglet does that in Rust, so Python's figure is an estimate). The safety
check runs while the images encode, so those two shares overlap.
"""

from __future__ import annotations

import base64
import statistics
import time
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import replace

import torch

from models.serving import model as serving
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec


@contextmanager
def _timed(owner, name: str, bucket: list[float], device: str):
    """Time every call of owner.<name> into bucket, for the body."""
    original = getattr(owner, name)
    instance = not isinstance(owner, type(serving))  # a module's function vs an object's method

    def timed(*args, **kwargs):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            bucket.append(time.perf_counter() - started)

    setattr(owner, name, timed)
    try:
        yield
    finally:
        if instance and name in vars(owner):
            delattr(owner, name)
        else:
            setattr(owner, name, original)


def bench_stages(model_name: str, inputs: dict, *, runs: int, go_fast: bool) -> dict:
    spec = get_spec(model_name)
    family = FAMILIES[spec.interface]
    model = DiffusionModel(spec, replace(load_settings(), compile="auto"))
    engine = model.engine
    pipe = (engine.fast_pipes if go_fast and engine.fast else engine.pipes)["txt2img"]
    denoiser = engine.fast.model if go_fast and engine.fast else engine.eager
    request = family.inputs(**inputs, go_fast=go_fast)
    model.predict(request)  # warm-up: lazy initialisation, first-call allocations
    spent: dict[str, list[float]] = defaultdict(list)
    totals, encoded = [], []
    with ExitStack() as stack:
        for owner, name, stage in (
            (pipe, "encode_prompt", "text_encoding"),
            (denoiser, "forward", "denoising"),
            (pipe.vae, "decode", "vae_decode"),
            (serving, "filter_safe", "safety_check"),
            (serving, "save_images", "image_encoding"),
        ):
            stack.enter_context(_timed(owner, name, spent[stage], engine.device))
        for _ in range(runs):
            started = time.perf_counter()
            paths = model.predict(request)
            totals.append(time.perf_counter() - started)
            began = time.perf_counter()
            for path in paths:
                base64.b64encode(path.read_bytes())
            encoded.append(time.perf_counter() - began)
    predict_s = statistics.median(totals)
    result = {"model": model_name, "go_fast": go_fast, "predict_s": round(predict_s, 3)}
    per_run = {stage: sum(times) / runs for stage, times in spent.items()}
    per_run["base64"] = statistics.median(encoded)
    for stage, seconds in per_run.items():
        result[f"{stage}_s"] = round(seconds, 4)
        result[f"{stage}_share"] = round(seconds / predict_s, 3)
    return result

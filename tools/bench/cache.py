"""`script/bench --step-cache`: what the step cache (models/engine/caching.py) saves and
what it changes. For a tiny or full model: transformer calls computed and seconds per
image with and without it, the ratio, and the mean pixel difference. For a mini model:
the judge's accuracy on the held-out set with and without it (models/mini/judge.py), at
28 steps (the mini FLUX is a flow model: more steps than its 4 are valid), and the mean
pixel difference between the two."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np

from models.mini import edits, judge
from models.mini.world import split
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from tools.bench.inputs import request_inputs
from tools.bench.quality import draw, edit_inputs, scene_inputs


def _mean_difference(first, second) -> float:
    pairs = zip(first, second, strict=True)
    return float(np.mean([np.abs(np.asarray(a, float) - np.asarray(b, float)).mean()
                          for a, b in pairs]))  # fmt: skip


def bench_step_cache(model: str, *, steps: int = 28, runs: int = 3) -> dict:
    spec = get_spec(model)
    served = DiffusionModel(spec, replace(load_settings(), safety_checker=False))
    family = FAMILIES[spec.interface]
    inputs = request_inputs(model, megapixels="0.25", steps=steps)
    result: dict = {"model": model, "steps": steps, "device": served.engine.device}
    pictures = {}
    for on in (False, True):
        job = served.plan(spec, family.inputs(**inputs, step_cache=on, go_fast=False))
        times = []
        for _ in range(runs + 1):  # the first warms up
            started = time.perf_counter()
            pictures[on] = served.engine.generate(job)
            times.append(time.perf_counter() - started)
        key = "cached" if on else "uncached"
        result[f"{key}_computed"] = served.engine.step_cache.computed
        result[f"{key}_s"] = round(statistics.median(times[1:]), 3)
    result["time_ratio"] = round(result["cached_s"] / result["uncached_s"], 3)
    result["mean_pixel_difference"] = round(_mean_difference(pictures[False], pictures[True]), 2)
    return result


def bench_step_cache_quality(model: str, *, steps: int = 28) -> dict:
    """Held-out accuracy of a mini model with and without the cache, at `steps`."""
    spec = get_spec(model)
    if not spec.step_cache:  # the mini FLUX is schnell-shaped: 4 steps, no cache input
        spec = replace(spec, max_steps=steps, step_cache=True)
    served = DiffusionModel(spec, replace(load_settings(), safety_checker=False))
    result: dict = {"model": model, "steps": steps}
    drawn: dict = {}
    for on in (False, True):
        started = time.perf_counter()
        if spec.interface == "flux-kontext":
            held = edits.held_out_sample(200)
            pairs = _edits(served, held, steps=steps, step_cache=on)
            scores = edits.score(pairs)
        else:
            _, held = split()
            pairs = [
                (scene, draw(served, scene_inputs(spec, scene, seed=i, square=i % 2 == 0,
                                                  index=i, num_inference_steps=steps,
                                                  step_cache=on))[0])
                for i, scene in enumerate(held * 2)
            ]  # fmt: skip
            scores = judge.score(pairs)
        drawn[on] = [picture for _, picture in pairs]
        key = "cached" if on else "uncached"
        result[key] = {name: round(value, 3) for name, value in scores.items()}
        result[f"{key}_s"] = round(time.perf_counter() - started, 1)
    result["mean_pixel_difference"] = round(_mean_difference(drawn[False], drawn[True]), 2)
    return result


def _edits(served, held, *, steps: int, step_cache: bool) -> list:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        pairs = []
        for i, edit in enumerate(held):
            inputs = edit_inputs(served.spec, edit, Path(folder), seed=i, square=i % 2 == 0,
                                 index=i)  # fmt: skip
            inputs = replace(inputs, num_inference_steps=steps, step_cache=step_cache)
            pairs.append((edit, draw(served, inputs)[0]))
        return pairs

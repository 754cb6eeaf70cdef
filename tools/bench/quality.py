"""script/bench --quality: what a mini model draws for prompts it never saw in training,
read back by models/mini/judge.py. Prints accuracy of background colour, shape colour, shape
class and position over every held-out scene, square and at other aspect ratios. For the
mini Kontext: over held-out edits, the share whose edited attribute reads as asked and
the share of the other attributes kept (models/mini/edits.py)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from models.loras.source import Tokens
from models.mini import edits, judge
from models.mini.world import Scene, render, split
from models.request.job import at_native_size
from models.request.sizes import size_for_aspect_ratio
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from tools.bench.inputs import size_inputs

# Aspect ratios other than 1:1 that each held-out scene is also drawn at (the mini
# models draw them within 128 px per side; see ModelSpec.max_native_side).
ASPECT_RATIOS = ("16:9", "2:3", "4:5", "21:9", "3:4", "9:16")
# The guidance a mini model is drawn at where the README recommends one other than the
# input's default: the mini SDXL binds colours best near 4 (held-out shape colour 0.84 at
# 3, 0.86 at 4, 0.84 at 5, 0.74 at 7.5, 0.56 at 10), while guidance_scale's default,
# 7.5, is SDXL's and shared by every SDXL variant's schema.
RECOMMENDED_GUIDANCE = {"mini-sdxl": 4.0}


def scene_inputs(spec, scene: Scene, *, seed: int, square: bool, index: int = 0, **extra):
    """The family's inputs drawing `scene` square or at one of the other shapes (`extra`
    may set another prompt, an image, a LoRA...)."""
    inputs = FAMILIES[spec.interface].inputs
    ratio = "1:1" if square else ASPECT_RATIOS[index % len(ASPECT_RATIOS)]
    # Either size is drawn at the model's native size (max_native_side) and judged there.
    size = size_inputs(spec.interface, ratio, "0.25")
    extra.setdefault("prompt", scene.prompt)
    if spec.name in RECOMMENDED_GUIDANCE:
        extra.setdefault("guidance_scale", RECOMMENDED_GUIDANCE[spec.name])
    return inputs(seed=seed, go_fast=False, **size, **extra)


def draw(served, inputs):
    """Pictures at the model's native size (no upscaling: that is the judge's input)."""
    spec = served.spec
    job, _ = at_native_size(served.plan(spec, inputs), spec.max_native_side, spec.size_multiple)
    return served.engine.generate(job, Tokens())


def edit_inputs(spec, edit: edits.Edit, folder: Path, *, seed: int, square: bool, index: int = 0):
    """The Kontext inputs making `edit` of its start scene, drawn square or at one of the
    other shapes (at the 0.25 MP table size; the model edits it at its native size)."""
    ratio = "1:1" if square else ASPECT_RATIOS[index % len(ASPECT_RATIOS)]
    start = folder / f"start-{index}-{ratio.replace(':', 'x')}.png"
    render(edit.start, *size_for_aspect_ratio(ratio, "0.25")).save(start)
    inputs = FAMILIES[spec.interface].inputs
    return inputs(prompt=edit.instruction, input_image=start, seed=seed, go_fast=False)


def bench_edit_quality(served, count: int) -> dict:
    """Held-out edits, square and at other shapes: edited and kept accuracy."""
    held = edits.held_out_sample(count)
    result = {"held_out_edits": len(held)}
    with tempfile.TemporaryDirectory(prefix="bench-edits-") as folder:
        for key, square in (("square", True), ("other_shapes", False)):
            pairs = [
                (edit, draw(served, edit_inputs(served.spec, edit, Path(folder), seed=i,
                                                square=square, index=i))[0])
                for i, edit in enumerate(held)
            ]  # fmt: skip
            result[key] = {name: round(value, 3) for name, value in edits.score(pairs).items()}
    return result


def bench_quality(model: str) -> dict:
    spec = get_spec(model)
    served = DiffusionModel(spec, replace(load_settings(), safety_checker=False))
    if spec.interface == "flux-kontext":
        started = time.perf_counter()
        result = {"model": model, **bench_edit_quality(served, 200)}
        return result | {"seconds": round(time.perf_counter() - started, 1)}
    _, held_out = split()
    started = time.perf_counter()
    result = {"model": model, "held_out_scenes": len(held_out)}
    runs = {"square": (True, {}), "other_shapes": (False, {})}
    if model in RECOMMENDED_GUIDANCE:
        result["guidance"] = RECOMMENDED_GUIDANCE[model]
        runs["square_at_default_guidance"] = (True, {"guidance_scale": spec.guidance})
    for key, (square, extra) in runs.items():
        pairs = [
            (scene, draw(served, scene_inputs(spec, scene, seed=i, square=square, index=i,
                                              **extra))[0])
            for i, scene in enumerate(held_out)
        ]  # fmt: skip
        scores = judge.score(pairs)
        result[key] = {name: round(value, 3) for name, value in scores.items()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result

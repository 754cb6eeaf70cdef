"""The requests benchmarks send, in each family's own inputs: one place that knows FLUX
takes aspect_ratio and megapixels where SDXL takes width and height."""

from __future__ import annotations

from models.request.sizes import size_for_aspect_ratio
from models.specs import get_spec


def size_inputs(family: str, aspect_ratio: str = "1:1", megapixels: str = "1") -> dict:
    """A size of the aspect-ratio table (models/request/sizes.py) as `family`'s inputs:
    SDXL gets the same width and height that FLUX draws for those inputs."""
    if family == "flux":
        return {"aspect_ratio": aspect_ratio, "megapixels": megapixels}
    width, height = size_for_aspect_ratio(aspect_ratio, megapixels)
    return {"width": width, "height": height}


def request_inputs(model: str, *, megapixels: str, steps: int | None) -> dict:
    """The plain request most benchmarks time: a square picture of a cat."""
    spec = get_spec(model)
    inputs = {"prompt": "a cat in a hat", "seed": 1, **size_inputs(spec.family, "1:1", megapixels)}
    inputs["num_inference_steps"] = steps or spec.default_steps
    return inputs

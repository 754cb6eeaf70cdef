"""The checks every family's plan() makes, one function each: a new family's plan() calls
these and adds only what is its own. Each raises InputError naming the input and the
fix; each value it settles is returned, final."""

from __future__ import annotations

import random

from PIL import Image

from models.errors import InputError, check_choice, check_range
from models.log import log
from models.request.outputs import OUTPUT_FORMATS
from models.specs import ModelSpec

MAX_SEED = 2**32 - 1
MAX_OUTPUTS = 4


def num_outputs(value: int) -> int:
    check_range("num_outputs", value, 1, MAX_OUTPUTS)
    return value


def steps(spec: ModelSpec, value: int | None) -> int:
    """num_inference_steps, the variant's default when not given."""
    value = spec.default_steps if value is None else value
    check_range("num_inference_steps", value, spec.min_steps, spec.max_steps)
    return value


def guidance(spec: ModelSpec, value: float | None, input_name: str = "guidance") -> float:
    """The guidance the pipeline gets: the variant's default when not given, 0 for a
    variant that takes none (schnell)."""
    if spec.guidance is None:
        return 0.0
    value = spec.guidance if value is None else value
    check_range(input_name, value, 0.0, spec.max_guidance)
    return value


def seed(value: int | None) -> int:
    """The request's seed, drawn at random when not given; logged either way, so any
    image can be made again."""
    if value is None:
        value = random.SystemRandom().randint(0, MAX_SEED)
    check_range("seed", value, 0, MAX_SEED)
    log.info(f"Using seed: {value}")
    return value


def output_files(output_format: str, output_quality: int) -> None:
    """Checked before any model work: a bad value must not cost a generation."""
    check_choice("output_format", output_format, OUTPUT_FORMATS)
    check_range("output_quality", output_quality, 0, 100)


def mode(spec: ModelSpec, value: str) -> str:
    if value not in spec.modes:
        served = ", ".join(spec.modes)
        raise InputError(f"{spec.name} does not do {value} (it does {served}): change the inputs.")
    return value


def size_of_image(image: Image.Image, ignored: str) -> tuple[int, int]:
    """An input image sets the output size; the size inputs it overrides are logged."""
    log.info(f"Output size {image.width}x{image.height} follows the input image; {ignored}.")
    return image.size


def strength(prompt_strength: float, steps: int, steps_run: int) -> float:
    """With an image, a pipeline runs only part of the steps (`steps_run`, by its own
    rounding rule); none at all would return the input unchanged, silently."""
    check_range("prompt_strength", prompt_strength, 0.0, 1.0)
    if steps_run < 1:
        raise InputError(
            f"prompt_strength={prompt_strength} with num_inference_steps={steps} leaves no "
            "denoising step: an input image is changed for about prompt_strength x "
            "num_inference_steps steps. Raise prompt_strength or num_inference_steps."
        )
    return prompt_strength


def step_cache(spec: ModelSpec, value: bool, go_fast: bool) -> bool:
    """Whether the request skips steps with the step cache: asked for, or (Kontext) part
    of go_fast."""
    if value and not spec.step_cache:
        raise InputError(
            f"step_cache: {spec.name} has no step cache (it takes few steps, or its denoiser "
            "is not one diffusers' caches can skip). Leave step_cache off."
        )
    on = value or (go_fast and spec.go_fast_step_cache)
    if on and not value:
        log.info("go_fast=true includes the step cache on this model")
    return on

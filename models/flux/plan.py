"""FLUX.1 requests: the inputs a user sends, validated and decided into a job (no model work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import check_range
from models.log import log
from models.loras.adapters import LoraInputs
from models.request.job import Job, check_strength, load_init_images, resolve_seed
from models.request.sizes import MATCH_INPUT, size_for_aspect_ratio
from models.specs import ModelSpec


@dataclass(frozen=True)
class FluxInputs(LoraInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    image: Path | None = None
    mask: Path | None = None
    prompt_strength: float = 0.8
    aspect_ratio: str = "1:1"
    megapixels: str = MATCH_INPUT
    num_outputs: int = 1
    num_inference_steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    output_format: str = "webp"
    output_quality: int = 80
    disable_safety_checker: bool = False
    go_fast: bool = True


class FluxJob(Job):
    """FLUX needs nothing beyond the shared fields."""


def plan(spec: ModelSpec, inputs: FluxInputs) -> FluxJob:
    """Validate inputs and decide everything the pipeline needs."""
    check_range("num_outputs", inputs.num_outputs, 1, 4)
    steps = spec.default_steps if inputs.num_inference_steps is None else inputs.num_inference_steps
    check_range("num_inference_steps", steps, 1, spec.max_steps)
    guidance = 0.0
    if spec.guidance is not None:
        guidance = spec.guidance if inputs.guidance is None else inputs.guidance
        check_range("guidance", guidance, 0.0, spec.max_guidance)
    loras = inputs.lora_requests()
    image, mask = load_init_images(
        inputs.image, inputs.mask, multiple=spec.size_multiple, megapixels=inputs.megapixels
    )
    if image is None:
        # match_input (the default) means 1 megapixel when there is nothing to match.
        megapixels = "1" if inputs.megapixels == MATCH_INPUT else inputs.megapixels
        width, height = size_for_aspect_ratio(inputs.aspect_ratio, megapixels)
    else:
        width, height = image.size
        log.info(f"Output size {width}x{height} follows the input image; aspect_ratio is ignored.")
        # FLUX's img2img rounds the skipped steps down, so any strength above 0 runs one.
        steps_run = steps - int(steps - steps * inputs.prompt_strength)
        check_strength(inputs.prompt_strength, steps, steps_run)
    return FluxJob(
        prompt=inputs.prompt,
        width=width,
        height=height,
        num_outputs=inputs.num_outputs,
        steps=steps,
        guidance=guidance,
        seed=resolve_seed(inputs.seed),
        image=image,
        mask=mask,
        strength=inputs.prompt_strength if image is not None else 1.0,
        loras=loras,
        go_fast=inputs.go_fast,
    )

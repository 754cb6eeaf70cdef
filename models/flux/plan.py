"""FLUX.1 requests: the inputs a user sends, validated and decided into a job (no model work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.loras.inputs import LoraInputs
from models.request import checks
from models.request.job import Job, edit_mode, load_init_images
from models.request.sizes import MATCH_INPUT, size_for_aspect_ratio
from models.specs import ModelSpec


@dataclass(frozen=True, kw_only=True)
class FluxRequestInputs(LoraInputs):
    """The inputs every FLUX predictor has (each family's own come first)."""

    num_inference_steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    output_format: str = "webp"
    output_quality: int = 80
    disable_safety_checker: bool = False
    go_fast: bool = True
    step_cache: bool = False


@dataclass(frozen=True)
class FluxInputs(FluxRequestInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    image: Path | None = None
    mask: Path | None = None
    prompt_strength: float = 0.8
    aspect_ratio: str = "1:1"
    megapixels: str = MATCH_INPUT
    num_outputs: int = 1


def plan(spec: ModelSpec, inputs: FluxInputs) -> Job:
    """Validate inputs and decide everything the pipeline needs."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    num_outputs = checks.num_outputs(inputs.num_outputs)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance)
    loras = inputs.lora_requests()
    image, mask = load_init_images(
        inputs.image, inputs.mask, multiple=spec.size_multiple, megapixels=inputs.megapixels
    )
    if image is None:
        # match_input (the default) means 1 megapixel when there is nothing to match.
        megapixels = "1" if inputs.megapixels == MATCH_INPUT else inputs.megapixels
        width, height = size_for_aspect_ratio(inputs.aspect_ratio, megapixels)
        strength = 1.0
    else:
        width, height = checks.size_of_image(image, "aspect_ratio is ignored")
        # FLUX's img2img rounds the skipped steps down, so any strength above 0 runs one.
        steps_run = steps - int(steps - steps * inputs.prompt_strength)
        strength = checks.strength(inputs.prompt_strength, steps, steps_run)
    return Job(
        mode=checks.mode(spec, edit_mode(image, mask)),
        prompt=inputs.prompt,
        width=width,
        height=height,
        num_outputs=num_outputs,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        image=image,
        mask=mask,
        strength=strength,
        loras=loras,
        go_fast=inputs.go_fast,
        step_cache=checks.step_cache(spec, inputs.step_cache, inputs.go_fast),
    )

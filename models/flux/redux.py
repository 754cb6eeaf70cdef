"""FLUX.1 Redux requests: variations of a picture, optionally steered by a prompt, decided
into a job. The engine turns the picture and the prompt into the embeddings the model
reads (models/flux/conditioning.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError, check_range
from models.flux.plan import FluxRequestInputs
from models.log import log
from models.request import checks
from models.request.imaging import load_image
from models.request.job import Job
from models.request.sizes import size_for_aspect_ratio
from models.specs import ModelSpec


@dataclass(frozen=True, kw_only=True)
class ReduxJob(Job):
    # How much of the picture's tokens the model reads, 0-1 (0: the prompt alone).
    redux_strength: float = 1.0


@dataclass(frozen=True)
class ReduxInputs(FluxRequestInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    redux_image: Path | None = None
    prompt: str = ""
    redux_strength: float = 1.0
    aspect_ratio: str = "1:1"
    megapixels: str = "1"
    num_outputs: int = 1


def plan(spec: ModelSpec, inputs: ReduxInputs) -> ReduxJob:
    """Validate inputs and decide everything the pipeline needs."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    num_outputs = checks.num_outputs(inputs.num_outputs)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance)
    check_range("redux_strength", inputs.redux_strength, 0.0, 1.0)
    loras = inputs.lora_requests()
    width, height = size_for_aspect_ratio(inputs.aspect_ratio, inputs.megapixels)
    if inputs.redux_image is None:
        raise InputError(
            "redux_image is required: Redux draws variations of a picture. Send it as "
            "redux_image (a prompt, optional, steers the variation)."
        )
    picture = load_image(inputs.redux_image, input_name="redux_image")
    log.info(
        f"Output size {width}x{height} (aspect_ratio={inputs.aspect_ratio}, megapixels="
        f"{inputs.megapixels}); the {picture.width}x{picture.height} picture is seen whole"
    )
    return ReduxJob(
        mode=checks.mode(spec, "redux"),
        prompt=inputs.prompt,
        width=width,
        height=height,
        num_outputs=num_outputs,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        conditioning={"redux_image": picture},
        redux_strength=inputs.redux_strength,
        loras=loras,
        go_fast=inputs.go_fast,
        step_cache=checks.step_cache(spec, inputs.step_cache, inputs.go_fast),
    )

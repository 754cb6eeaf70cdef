"""FLUX.1 Kontext requests: the picture to edit and the instruction, with an optional mask
that limits the edit to one region, decided into a job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError, check_choice
from models.flux.plan import FluxRequestInputs
from models.log import log
from models.request import checks
from models.request.imaging import load_image, load_mask, resize_image
from models.request.job import Job
from models.request.sizes import ASPECT_RATIOS, size_for_aspect_ratio

MATCH_INPUT_IMAGE = "match_input_image"


@dataclass(frozen=True)
class KontextInputs(FluxRequestInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    input_image: Path | None = None
    mask: Path | None = None
    aspect_ratio: str = MATCH_INPUT_IMAGE


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The resolution Kontext was trained at nearest the picture's shape (diffusers' own
    table and rule: the pipeline would pick the same if left to resize)."""
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    ratio = width / height
    return min(PREFERRED_KONTEXT_RESOLUTIONS, key=lambda wh: abs(ratio - wh[0] / wh[1]))


def plan(spec, inputs: KontextInputs) -> Job:
    """Validate inputs and decide everything the pipeline needs."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance)
    check_choice("aspect_ratio", inputs.aspect_ratio, (MATCH_INPUT_IMAGE, *ASPECT_RATIOS))
    loras = inputs.lora_requests()
    if inputs.input_image is None:
        raise InputError(
            "input_image is required: Kontext edits a picture as the prompt says. Send the "
            "picture to edit as input_image."
        )
    picture = load_image(inputs.input_image, input_name="input_image")
    picture = resize_image(picture, kontext_size(*picture.size))
    size, mask = picture.size, None
    if inputs.mask is not None:
        mask = load_mask(inputs.mask, picture.size, input_name="mask")
        if inputs.aspect_ratio != MATCH_INPUT_IMAGE:
            log.info("aspect_ratio is ignored with a mask: a region edit keeps the picture's frame")
    elif inputs.aspect_ratio != MATCH_INPUT_IMAGE:
        size = size_for_aspect_ratio(inputs.aspect_ratio, "1")
    log.info(f"Output size {size[0]}x{size[1]} (aspect_ratio={inputs.aspect_ratio})")
    return Job(
        mode=checks.mode(spec, "edit" if mask is None else "edit-region"),
        prompt=inputs.prompt,
        width=size[0],
        height=size[1],
        num_outputs=1,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        image=picture,
        mask=mask,
        loras=loras,
        go_fast=inputs.go_fast,
        step_cache=checks.step_cache(spec, inputs.step_cache, inputs.go_fast),
    )

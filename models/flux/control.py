"""FLUX.1 Canny and Depth requests: the control image whose edges or depth the new picture
follows, decided into a job. The map itself is made by the engine, on the loaded models
(models/flux/conditioning.py), unless the user sent one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError
from models.flux.plan import FluxRequestInputs
from models.log import log
from models.request import checks
from models.request.imaging import load_image, resize_image
from models.request.job import Job
from models.request.sizes import MATCH_INPUT, size_for_image
from models.specs import ModelSpec


@dataclass(frozen=True, kw_only=True)
class ControlJob(Job):
    # Turn conditioning["control_image"] into the spec's map (edges, depth) before the
    # steps; False: it is such a map already, used as sent.
    preprocess: bool = True


@dataclass(frozen=True)
class ControlInputs(FluxRequestInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    control_image: Path | None = None
    control_preprocess: bool = True
    return_control_image: bool = False
    megapixels: str = MATCH_INPUT
    num_outputs: int = 1


def plan(spec: ModelSpec, inputs: ControlInputs) -> ControlJob:
    """Validate inputs and decide everything the pipeline needs."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    num_outputs = checks.num_outputs(inputs.num_outputs)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance)
    loras = inputs.lora_requests()
    kind = "edges" if spec.control == "canny" else "depth"
    if inputs.control_image is None:
        raise InputError(
            f"control_image is required: the new picture follows its {kind}. Send a picture "
            f"(its {kind} are found for you), or a {kind} map with control_preprocess=false."
        )
    picture = load_image(inputs.control_image, input_name="control_image")
    size = size_for_image(*picture.size, multiple=spec.size_multiple, megapixels=inputs.megapixels)
    picture = resize_image(picture, size)
    if not inputs.control_preprocess:
        log.info(f"control_preprocess=false: the control image is used as sent, as a {kind} map")
    log.info(
        f"Output size {size[0]}x{size[1]}, the control image's (megapixels={inputs.megapixels})"
    )
    return ControlJob(
        mode=checks.mode(spec, "control"),
        prompt=inputs.prompt,
        width=size[0],
        height=size[1],
        num_outputs=num_outputs,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        conditioning={"control_image": picture},
        returned=("control_image",) if inputs.return_control_image else (),
        preprocess=inputs.control_preprocess,
        loras=loras,
        go_fast=inputs.go_fast,
        step_cache=checks.step_cache(spec, inputs.step_cache, inputs.go_fast),
    )

"""SDXL requests: the inputs a user sends, validated and decided into a job, with the
scheduler and refiner choices (no model work; the engine is models/sdxl/engine.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError, check_choice, check_range
from models.log import log
from models.loras.inputs import LoraInputs
from models.request import checks
from models.request.job import Job, edit_mode, load_init_images
from models.request.sizes import MATCH_INPUT, round_to_multiple
from models.sdxl.schedulers import SCHEDULERS, SchedulerChoice
from models.specs import ModelSpec

REFINE_MODES = ("no_refiner", "expert_ensemble_refiner", "base_image_refiner")
# base_image_refiner re-noises the base's output this much and runs that share of
# refine_steps (diffusers' img2img default, which cog-sdxl uses too).
REFINER_STRENGTH = 0.3


MIN_SIDE, MAX_SIDE = 256, 2048
# The base model's share of the steps with expert_ensemble_refiner: strictly between 0
# and 1, each model needs some.
HIGH_NOISE_FRAC = (0.01, 0.99)


@dataclass(frozen=True)
class SDXLInputs(LoraInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    negative_prompt: str = ""
    image: Path | None = None
    mask: Path | None = None
    width: int = 1024
    height: int = 1024
    num_outputs: int = 1
    scheduler: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    prompt_strength: float = 0.8
    seed: int | None = None
    refine: str = "no_refiner"
    high_noise_frac: float = 0.8
    refine_steps: int | None = None
    output_format: str = "webp"
    output_quality: int = 80
    disable_safety_checker: bool = False
    go_fast: bool = False


@dataclass(frozen=True, kw_only=True)
class SDXLJob(Job):
    """The shared fields plus SDXL's: negative prompt, scheduler and refiner choices."""

    negative_prompt: str | None
    scheduler: str  # the input's name, for logs
    scheduler_choice: SchedulerChoice
    refine: str = "no_refiner"
    high_noise_frac: float = 0.8
    # The refiner's num_inference_steps for base_image_refiner; None otherwise.
    refine_steps: int | None = None
    refiner_strength: float = REFINER_STRENGTH


def _refine_steps(inputs: SDXLInputs, steps: int, max_steps: int) -> int | None:
    if inputs.refine_steps is not None:
        check_range("refine_steps", inputs.refine_steps, 1, max_steps)
        if inputs.refine != "base_image_refiner":
            # As in cog-sdxl: the ensemble splits num_inference_steps at high_noise_frac.
            log.info(f"refine_steps is ignored with refine={inputs.refine}")
    if inputs.refine != "base_image_refiner":
        return None
    refine_steps = inputs.refine_steps or steps
    if int(refine_steps * REFINER_STRENGTH) < 1:
        raise InputError(
            f"refine_steps={refine_steps} leaves the refiner no step: base_image_refiner runs "
            f"{REFINER_STRENGTH} x refine_steps steps (refine_steps defaults to "
            f"num_inference_steps). Use refine_steps of {math.ceil(1 / REFINER_STRENGTH)} or more."
        )
    return refine_steps


def _check_ensemble(inputs: SDXLInputs) -> None:
    # At 0 or 1 one of the two models gets no step, so the schema allows this range
    # only; how steps split is checked exactly, with the request's scheduler, by
    # SDXLEngine.check_ensemble_split.
    check_range("high_noise_frac", inputs.high_noise_frac, *HIGH_NOISE_FRAC)
    changed = inputs.high_noise_frac != SDXLInputs.high_noise_frac
    if inputs.refine != "expert_ensemble_refiner" and changed:
        log.info(f"high_noise_frac is ignored with refine={inputs.refine}")


def plan(spec: ModelSpec, inputs: SDXLInputs) -> SDXLJob:
    """Validate inputs and decide everything the pipelines need."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    num_outputs = checks.num_outputs(inputs.num_outputs)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance_scale, "guidance_scale")
    if inputs.negative_prompt and guidance <= 1:
        log.info(f"negative_prompt is ignored: guidance_scale={guidance} turns guidance off")
    scheduler = inputs.scheduler or spec.scheduler
    check_choice("scheduler", scheduler, SCHEDULERS)
    check_choice("refine", inputs.refine, REFINE_MODES)
    if inputs.refine != "no_refiner" and spec.refiner is None:
        raise InputError(
            f"refine={inputs.refine}: {spec.name} has no refiner. Use refine=no_refiner."
        )
    refine_steps = _refine_steps(inputs, steps, spec.max_steps)
    _check_ensemble(inputs)
    loras = inputs.lora_requests()
    image, mask = load_init_images(
        inputs.image,
        inputs.mask,
        multiple=spec.size_multiple,
        megapixels=MATCH_INPUT,
        max_side=MAX_SIDE,
    )
    if image is None:
        check_range("width", inputs.width, MIN_SIDE, MAX_SIDE)
        check_range("height", inputs.height, MIN_SIDE, MAX_SIDE)
        width, height = round_to_multiple(inputs.width, inputs.height, spec.size_multiple)
        strength = 1.0
    else:
        width, height = checks.size_of_image(image, "width and height are ignored")
        # SDXL's img2img rounds the steps it runs down.
        steps_run = int(steps * inputs.prompt_strength)
        strength = checks.strength(inputs.prompt_strength, steps, steps_run)
    return SDXLJob(
        mode=checks.mode(spec, edit_mode(image, mask)),
        prompt=inputs.prompt,
        # None rather than "": SDXL's config asks for zeroed negative embeddings when there
        # is no negative prompt (force_zeros_for_empty_prompt); the pipeline does that
        # only for None, and would encode "" as text.
        negative_prompt=inputs.negative_prompt or None,
        width=width,
        height=height,
        num_outputs=num_outputs,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        scheduler=scheduler,
        scheduler_choice=SCHEDULERS[scheduler],
        refine=inputs.refine,
        high_noise_frac=inputs.high_noise_frac,
        refine_steps=refine_steps,
        image=image,
        mask=mask,
        strength=strength,
        loras=loras,
        go_fast=inputs.go_fast,
    )

"""FLUX.1 text-to-image, image-to-image and inpainting from one set of components."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from models import common, requests
from models.engine import Engine
from models.errors import check_range
from models.log import log
from models.lora import LoraInputs
from models.lora_sources import Tokens
from models.settings import Settings
from models.sizes import MATCH_INPUT, size_for_aspect_ratio
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


class FluxJob(requests.Job):
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
    image, mask = requests.load_init_images(
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
        requests.check_strength(inputs.prompt_strength, steps, steps_run)
    return FluxJob(
        prompt=inputs.prompt,
        width=width,
        height=height,
        num_outputs=inputs.num_outputs,
        steps=steps,
        guidance=guidance,
        seed=requests.resolve_seed(inputs.seed),
        image=image,
        mask=mask,
        strength=inputs.prompt_strength if image is not None else 1.0,
        loras=loras,
        go_fast=inputs.go_fast,
    )


def load_components(spec: ModelSpec, weights: Path, device: str, *, config: Path | None = None):
    """Every FLUX component, loaded once, as the base pipeline that holds them: the
    predictors' engine derives its mode pipelines from it, and train.py trains on it."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    dtype = common.pick_dtype(spec.dtype, device)
    if not weights.is_file():
        return common.load_pipeline(FluxPipeline, weights, dtype=dtype, device=device)
    # A FLUX fine-tune file holds only the transformer; `config` is the variant's
    # folder, which supplies its config and every other component.
    log.info(f"Loading the transformer from {weights.name}")
    transformer = FluxTransformer2DModel.from_single_file(
        str(weights), config=str(config), subfolder="transformer", dtype=dtype
    )
    return common.load_pipeline(
        FluxPipeline, config, dtype=dtype, device=device, transformer=transformer
    )


class FluxEngine(Engine):
    """The three modes share every component of `base` (see load_components)."""

    denoiser = "transformer"
    lora_components = ("transformer", "text_encoder")

    def mode_classes(self) -> dict:
        from diffusers import FluxImg2ImgPipeline, FluxInpaintPipeline

        return {"img2img": FluxImg2ImgPipeline, "inpaint": FluxInpaintPipeline}

    def base_kwargs(self, job: FluxJob, generator: torch.Generator) -> dict:
        """The diffusers call's arguments for this job (progress logging aside)."""
        kwargs = dict(
            prompt=job.prompt,
            width=job.width,
            height=job.height,
            num_images_per_prompt=job.num_outputs,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            max_sequence_length=self.spec.max_sequence_length,
            generator=generator,
        )
        if job.image is not None:
            kwargs.update(image=job.image, strength=job.strength)
        if job.mask is not None:
            kwargs.update(mask_image=job.mask)
        return kwargs

    def generate(
        self, job: FluxJob, tokens: Tokens = Tokens(), *, warm_slots: bool = False
    ) -> list[Image.Image]:
        log.info(f"Mode: {job.mode}, {job.width}x{job.height}, {job.steps} steps")
        kwargs = self.base_kwargs(job, requests.seeded_generator(job.seed))
        with self.request(job, tokens, warm_slots=warm_slots) as pipe, torch.inference_mode():
            return pipe(**kwargs, callback_on_step_end=common.step_logger()).images


class FluxModel(common.DiffusionModel):
    """Everything a FLUX predictor does, without Cog: setup once, predict many times."""

    plan = staticmethod(plan)
    inputs = FluxInputs
    engine = FluxEngine

    @classmethod
    def load_components(cls, spec: ModelSpec, settings: Settings, device: str, *, training=False):
        weights, config = common.main_weights(spec, settings)
        return load_components(spec, weights, device, config=config)

    def warm_up_inputs(self) -> list[FluxInputs]:
        """One batch of 1 and one of 2 (a batch of 1 is compiled as its own case); other
        sizes, modes and batches reuse these graphs (dynamic shapes)."""
        return [
            FluxInputs(
                prompt="warm-up",
                megapixels="0.25",
                num_outputs=n,
                num_inference_steps=1,
                seed=0,
                go_fast=True,
            )
            for n in (1, 2)
        ]

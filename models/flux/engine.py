"""The diffusers side of FLUX.1: its components loaded once, and the engine that runs a job
in text-to-image, image-to-image or inpainting mode over them."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from models.engine import loading
from models.engine.base import Engine, step_logger
from models.flux.plan import FluxJob
from models.log import log
from models.loras.sources import Tokens
from models.request.job import seeded_generator
from models.specs import ModelSpec


def load_components(spec: ModelSpec, weights: Path, device: str, *, config: Path | None = None):
    """Every FLUX component, loaded once, as the base pipeline that holds them: the
    predictors' engine derives its mode pipelines from it, and train.py trains on it."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    dtype = loading.pick_dtype(spec.dtype, device)
    if not weights.is_file():
        return loading.load_pipeline(FluxPipeline, weights, dtype=dtype, device=device)
    # A FLUX fine-tune file holds only the transformer; `config` is the variant's
    # folder, which supplies its config and every other component.
    log.info(f"Loading the transformer from {weights.name}")
    transformer = FluxTransformer2DModel.from_single_file(
        str(weights), config=str(config), subfolder="transformer", dtype=dtype
    )
    return loading.load_pipeline(
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
        kwargs = self.base_kwargs(job, seeded_generator(job.seed))
        with self.request(job, tokens, warm_slots=warm_slots) as pipe, torch.inference_mode():
            return pipe(**kwargs, callback_on_step_end=step_logger()).images

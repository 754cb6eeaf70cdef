"""The diffusers side of SDXL: loading base and refiner once, and running one job.

The three base modes share the base's components; the refiner loads only its own UNet
and borrows the base's VAE and second text encoder (Replicate's refiner tar has neither).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from models.engine import loading
from models.engine.base import Engine, step_logger
from models.errors import InputError
from models.log import log
from models.loras.sources import Tokens
from models.request.job import seeded_generator
from models.specs import ModelSpec

if TYPE_CHECKING:
    from models.sdxl.plan import SchedulerChoice, SDXLJob

# Never watermark, whatever is installed (see models/sdxl/plan.py on apply_watermark).
_NO_WATERMARK = dict(add_watermarker=False)


def make_scheduler(choice: SchedulerChoice, config):
    """A fresh scheduler of the request's choice (resolved by plan()) from `config`."""
    import diffusers

    return getattr(diffusers, choice.class_name).from_config(config, **dict(choice.overrides))


@dataclass(frozen=True)
class SDXLComponents:
    """The base pipeline (all of SDXL's components) and the refiner, if loaded, which
    holds only its own UNet and text encoder plus the base's VAE and text_encoder_2."""

    base: Any
    refiner: Any | None = None


def load_components(
    spec: ModelSpec,
    weights: Path,
    device: str,
    *,
    refiner: Path | None = None,
    config: Path | None = None,
) -> SDXLComponents:
    """Every SDXL component, loaded once: the predictor's engine derives its mode
    pipelines from these, and train.py trains on `base`."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    dtype = loading.pick_dtype(spec.dtype, device)
    load = dict(dtype=dtype, device=device, **_NO_WATERMARK)
    base = loading.load_pipeline(StableDiffusionXLPipeline, weights, config=config, **load)
    if refiner is None:
        return SDXLComponents(base)
    shared = dict(vae=base.vae, text_encoder_2=base.text_encoder_2)
    first = loading.load_pipeline(StableDiffusionXLImg2ImgPipeline, refiner, **shared, **load)
    return SDXLComponents(base, first)


class SDXLEngine(Engine):
    """Three base modes and two refiner modes share the components' models. LoRAs and
    go_fast apply to the base UNet, as in cog-sdxl; the refiner shares text_encoder_2
    with the base, so a LoRA's changes to that encoder reach the refiner's prompts too."""

    denoiser = "unet"
    lora_components = ("unet", "text_encoder", "text_encoder_2")
    extra = _NO_WATERMARK

    def __init__(self, spec: ModelSpec, components: SDXLComponents, device: str, **options):
        super().__init__(spec, components.base, device, **options)
        self.refiners = {}
        if components.refiner is not None:
            from diffusers import StableDiffusionXLInpaintPipeline

            inpaint = {"inpaint": StableDiffusionXLInpaintPipeline}
            refiner = components.refiner
            derived = loading.derive_pipes(refiner, inpaint, dtype=self.dtype, **self.extra)
            self.refiners = {"img2img": refiner, **derived}

    def mode_classes(self) -> dict:
        from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

        return {
            "img2img": StableDiffusionXLImg2ImgPipeline,
            "inpaint": StableDiffusionXLInpaintPipeline,
        }

    @contextmanager
    def request(self, job: SDXLJob, tokens: Tokens, *, warm_slots: bool = False) -> Iterator:
        """The base's per-request state (Engine.request: go_fast, LoRAs) plus a fresh
        scheduler per pipeline from its weights' own config, so no choice or step state
        leaks to the next request. Yields (base-mode pipeline, refiner pipeline or None)."""
        with super().request(job, tokens, warm_slots=warm_slots) as pipe:
            refiner = None
            if job.refine != "no_refiner":
                refiner = self.refiners["inpaint" if job.mask is not None else "img2img"]
            used = (pipe, refiner) if refiner is not None else (pipe,)
            originals = [p.scheduler for p in used]
            try:
                for p, original in zip(used, originals, strict=True):
                    p.scheduler = make_scheduler(job.scheduler_choice, original.config)
                yield pipe, refiner
            finally:
                for p, original in zip(used, originals, strict=True):
                    p.scheduler = original

    def check_ensemble_split(self, job: SDXLJob) -> None:
        """Count the steps each model gets in an expert ensemble, by diffusers' own rules,
        on a throwaway copy of the request's scheduler: when one side gets none, diffusers
        fails with a message about its internals, or the base silently runs nothing."""
        scheduler = make_scheduler(job.scheduler_choice, self.pipes["txt2img"].scheduler.config)
        scheduler.set_timesteps(job.steps)
        timesteps = scheduler.timesteps
        total = scheduler.config.num_train_timesteps
        cutoff = int(round(total - job.high_noise_frac * total))
        base = timesteps
        if job.image is not None:  # img2img and inpaint start part-way, by strength
            skipped = job.steps - min(int(job.steps * job.strength), job.steps)
            base = timesteps[skipped * scheduler.order :]
        base_steps, refiner_steps = int((base >= cutoff).sum()), int((timesteps < cutoff).sum())
        if base_steps and refiner_steps:
            return
        image = ", prompt_strength" if job.image is not None else ""
        raise InputError(
            f"With expert_ensemble_refiner, num_inference_steps={job.steps} and "
            f"high_noise_frac={job.high_noise_frac}{image} give the base model {base_steps} "
            f"and the refiner {refiner_steps} steps; each needs at least one. Use more steps, "
            "or a high_noise_frac nearer 0.8."
        )

    def base_kwargs(self, job: SDXLJob, generator: torch.Generator) -> dict:
        kwargs = dict(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            num_images_per_prompt=job.num_outputs,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            generator=generator,
        )
        if job.mode != "img2img":  # img2img takes its size from the image
            kwargs.update(width=job.width, height=job.height)
        if job.image is not None:
            kwargs.update(image=job.image, strength=job.strength)
        if job.mask is not None:
            kwargs.update(mask_image=job.mask)
        if job.refine == "expert_ensemble_refiner":
            kwargs.update(denoising_end=job.high_noise_frac)
        if job.refine != "no_refiner":
            kwargs.update(output_type="latent")  # the refiner continues without a VAE trip
        return kwargs

    def refiner_kwargs(self, job: SDXLJob, latents, generator) -> dict:
        kwargs = dict(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            num_images_per_prompt=job.num_outputs,
            guidance_scale=job.guidance,
            generator=generator,
            image=latents,
        )
        if job.refine == "expert_ensemble_refiner":
            kwargs.update(num_inference_steps=job.steps, denoising_start=job.high_noise_frac)
        else:
            kwargs.update(num_inference_steps=job.refine_steps, strength=job.refiner_strength)
        if job.mask is not None:
            # The base ends with the kept area's clean latents, and the inpainting
            # refiner blends that area back every step, so it stays the input image.
            kwargs.update(mask_image=job.mask, width=job.width, height=job.height)
        return kwargs

    def generate(
        self, job: SDXLJob, tokens: Tokens = Tokens(), *, warm_slots: bool = False
    ) -> list[Image.Image]:
        log.info(
            f"Mode: {job.mode}, {job.width}x{job.height}, {job.steps} steps, "
            f"{job.scheduler}, {job.refine}"
        )
        if job.refine != "no_refiner" and not self.refiners:
            raise InputError(f"refine={job.refine} needs the refiner, which is not loaded.")
        if job.refine == "expert_ensemble_refiner":
            self.check_ensemble_split(job)
        generator = seeded_generator(job.seed)
        progress = dict(callback_on_step_end=step_logger())
        request = self.request(job, tokens, warm_slots=warm_slots)
        with request as (pipe, refiner), torch.inference_mode():
            images = pipe(**self.base_kwargs(job, generator), **progress).images
            if refiner is None:
                return images
            log.info(f"Refining with {job.refine}")
            return refiner(**self.refiner_kwargs(job, images, generator), **progress).images

"""The diffusers side of SDXL: loading base and refiner once, and running one job.

The base's modes share its components; the refiner loads only its own UNet and borrows
the base's VAE and second text encoder (Replicate's refiner tar has neither).

No watermark, and no apply_watermark input: diffusers' SDXL watermark needs the
`invisible-watermark` package, which requires the full `opencv-python` by name (the
headless build does not satisfy it). That wheel links libGL and glib, which the Cog image
has only if cog.yaml installs them as system packages (cog-sdxl's does), and it adds
about 190 MB of OpenCV, Qt and ffmpeg for a DWT watermark. It installs and works on a
machine that has libGL; rather than a switch that fails or silently does nothing in our
image, there is none. Every pipeline is built with add_watermarker=False, so installing
the package later changes no output silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from models.engine import loading
from models.engine.base import Engine
from models.errors import InputError
from models.log import log
from models.sdxl.plan import SDXLJob
from models.sdxl.schedulers import make_scheduler
from models.specs import ModelSpec

_NO_WATERMARK = MappingProxyType({"add_watermarker": False})
# The refiner's modes: the base's output is refined like an image (img2img), or, for
# inpainting, with the mask, so the kept area stays the input image.
REFINER_PIPELINES = (
    ("img2img", "StableDiffusionXLImg2ImgPipeline"),
    ("inpaint", "StableDiffusionXLInpaintPipeline"),
)


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
    import diffusers

    dtype = loading.pick_dtype(spec.dtype, device)
    load = dict(dtype=dtype, device=device, **_NO_WATERMARK)
    base_class = getattr(diffusers, spec.pipelines[0][1])
    base = loading.load_pipeline(base_class, weights, config=config, **load)
    if refiner is None:
        return SDXLComponents(base)
    shared = dict(vae=base.vae, text_encoder_2=base.text_encoder_2)
    refiner_class = getattr(diffusers, REFINER_PIPELINES[0][1])
    first = loading.load_pipeline(refiner_class, refiner, **shared, **load)
    return SDXLComponents(base, first)


# Each base mode's own arguments, beside those every mode takes (SDXLEngine.call_args).
# img2img takes its size from the image; the others are given it.
MODE_ARGS = {
    "txt2img": lambda job: dict(width=job.width, height=job.height),
    "img2img": lambda job: dict(image=job.image, strength=job.strength),
    "inpaint": lambda job: dict(
        image=job.image,
        strength=job.strength,
        mask_image=job.mask,
        width=job.width,
        height=job.height,
    ),
}


class SDXLEngine(Engine):
    """The base's modes and the refiner's two share the components' models. LoRAs and
    go_fast apply to the base UNet, as in cog-sdxl; the refiner shares text_encoder_2
    with the base, so a LoRA's changes to that encoder reach the refiner's prompts too.
    A refined job has two stages: the base (ending in latents), then the refiner."""

    denoiser = "unet"
    lora_components = ("unet", "text_encoder", "text_encoder_2")
    pipeline_kwargs = _NO_WATERMARK

    def __init__(self, spec: ModelSpec, components: SDXLComponents, device: str, **options):
        super().__init__(spec, components.base, device, **options)
        self.refiners = {}
        if components.refiner is not None:
            import diffusers

            (first, _), *others = REFINER_PIPELINES
            classes = {mode: getattr(diffusers, name) for mode, name in others}
            refiner = components.refiner
            derived = loading.derive_pipes(
                refiner, classes, dtype=self.dtype, **self.pipeline_kwargs
            )
            self.refiners = {first: refiner, **derived}

    def describe(self, job: SDXLJob) -> str:
        return f"{super().describe(job)}, {job.scheduler}, {job.refine}"

    def stages(self, job: SDXLJob, pipe) -> list:
        if job.refine == "no_refiner":
            return [pipe]
        return [pipe, self.refiners["inpaint" if job.mask is not None else "img2img"]]

    def scheduler_for(self, job: SDXLJob, pipe):
        """A fresh scheduler of the request's choice, from the pipeline's own weights'
        config, so no choice or step state leaks to the next request."""
        return make_scheduler(job.scheduler_choice, pipe.scheduler.config)

    def check(self, job: SDXLJob) -> None:
        if job.refine == "expert_ensemble_refiner":
            self.check_ensemble_split(job)

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

    def call_args(self, job: SDXLJob, generator: torch.Generator, stage: int = 0, previous=None):
        shared = dict(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            num_images_per_prompt=job.num_outputs,
            guidance_scale=job.guidance,
            generator=generator,
        )
        if stage == 0:
            return {**shared, **self._base_args(job)}
        log.info(f"Refining with {job.refine}")
        return {**shared, **self._refiner_args(job, previous)}

    def _base_args(self, job: SDXLJob) -> dict:
        kwargs = dict(num_inference_steps=job.steps, **MODE_ARGS[job.mode](job))
        if job.refine == "expert_ensemble_refiner":
            kwargs.update(denoising_end=job.high_noise_frac)
        if job.refine != "no_refiner":
            kwargs.update(output_type="latent")  # the refiner continues without a VAE trip
        return kwargs

    def _refiner_args(self, job: SDXLJob, latents) -> dict:
        kwargs = dict(image=latents)
        if job.refine == "expert_ensemble_refiner":
            kwargs.update(num_inference_steps=job.steps, denoising_start=job.high_noise_frac)
        else:
            kwargs.update(num_inference_steps=job.refine_steps, strength=job.refiner_strength)
        if job.mask is not None:
            # The base ends with the kept area's clean latents, and the inpainting
            # refiner blends that area back every step, so it stays the input image.
            kwargs.update(mask_image=job.mask, width=job.width, height=job.height)
        return kwargs

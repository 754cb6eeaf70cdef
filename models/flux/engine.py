"""The diffusers side of FLUX.1: its components loaded once, and the engine that runs a job
in any of the spec's modes over them."""

from __future__ import annotations

from pathlib import Path

import torch

from models.engine import loading
from models.engine.base import Engine
from models.log import log
from models.request.job import Job
from models.specs import ModelSpec


def load_components(spec: ModelSpec, weights: Path, device: str, *, config: Path | None = None):
    """Every FLUX component, loaded once, as the pipeline of the spec's first mode: the
    predictors' engine derives its other modes from it, and train.py trains on it."""
    import diffusers
    from diffusers import FluxTransformer2DModel

    base = getattr(diffusers, spec.pipelines[0][1])
    dtype = loading.pick_dtype(spec.dtype, device)
    if not weights.is_file():
        return loading.load_pipeline(base, weights, dtype=dtype, device=device)
    # A FLUX fine-tune file holds only the transformer; `config` is the variant's
    # folder, which supplies its config and every other component.
    log.info(f"Loading the transformer from {weights.name}")
    transformer = FluxTransformer2DModel.from_single_file(
        str(weights), config=str(config), subfolder="transformer", dtype=dtype
    )
    return loading.load_pipeline(base, config, dtype=dtype, device=device, transformer=transformer)


# Each mode's own arguments, beside those every mode takes (FluxEngine.call_args). Kontext
# gets its picture already at a size it was trained at (plan() chose it, and the mini
# models' native size may have shrunk it): the pipeline must not resize it again, nor
# scale the output to its default area (1 MP), which it does to any size it is given.
MODE_ARGS = {
    "txt2img": lambda job: {},
    "img2img": lambda job: dict(image=job.image, strength=job.strength),
    "inpaint": lambda job: dict(image=job.image, strength=job.strength, mask_image=job.mask),
    "fill": lambda job: dict(image=job.image, mask_image=job.mask),
    "edit": lambda job: dict(image=job.image, _auto_resize=False, max_area=job.width * job.height),
    "edit-region": lambda job: dict(
        image=job.image, mask_image=job.mask, _auto_resize=False, max_area=job.width * job.height
    ),
}


class FluxEngine(Engine):
    """Every mode shares every component of the base pipeline (see load_components)."""

    denoiser = "transformer"
    lora_components = ("transformer", "text_encoder")

    def call_args(self, job: Job, generator: torch.Generator, stage: int = 0, previous=None):
        return dict(
            prompt=job.prompt,
            width=job.width,
            height=job.height,
            num_images_per_prompt=job.num_outputs,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            max_sequence_length=self.spec.max_sequence_length,
            generator=generator,
            **MODE_ARGS[job.mode](job),
        )

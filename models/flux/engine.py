"""The diffusers side of FLUX.1: its components loaded once, and the engine that runs a job
in any of the spec's modes over them."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from models.engine import loading
from models.engine.base import Engine
from models.flux.conditioning import canny_map, depth_map, redux_embeddings
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
    "control": lambda job: dict(control_image=job.conditioning["control_image"]),
    # The prompt's place is taken by embeddings of the prompt and the picture (prepare).
    "redux": lambda job: {},
}


class FluxEngine(Engine):
    """Every mode shares every component of the base pipeline (see load_components)."""

    denoiser = "transformer"
    lora_components = ("transformer", "text_encoder")

    def __init__(self, spec: ModelSpec, base, device: str, **options):
        super().__init__(spec, base, device, **options)
        self.prior = None
        if spec.redux:
            # Redux's encoder and embedder with the base model's text encoders: one copy of
            # them, and a LoRA active on them reaches the prompt's embeddings too.
            from diffusers import FluxPriorReduxPipeline

            loaded = self.extras[spec.redux]
            self.prior = FluxPriorReduxPipeline(
                image_encoder=loaded.image_encoder,
                feature_extractor=loaded.feature_extractor,
                image_embedder=loaded.image_embedder,
                text_encoder=base.text_encoder,
                tokenizer=base.tokenizer,
                text_encoder_2=base.text_encoder_2,
                tokenizer_2=base.tokenizer_2,
            )

    def prepare(self, job: Job) -> tuple[Job, dict]:
        if job.mode == "control" and job.preprocess:
            started = time.perf_counter()
            picture = job.conditioning["control_image"]
            if self.spec.control == "canny":
                mapped = canny_map(picture, self.device)
            else:
                mapped = depth_map(picture, self.extras[self.spec.depth_estimator])
            log.info(
                f"Control image: {self.spec.control} map of the picture sent, "
                f"{time.perf_counter() - started:.2f}s"
            )
            job = replace(job, conditioning={**job.conditioning, "control_image": mapped})
        if job.mode == "redux":
            base = self.pipes[self.spec.modes[0]]
            return job, redux_embeddings(
                self.prior,
                base,
                job,
                max_sequence_length=self.spec.max_sequence_length,
                dtype=self.dtype,
            )
        return job, {}

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

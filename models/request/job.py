"""What one request asks for, decided before any model work: the job, its seed, its
input images. Nothing here touches a pipeline."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from models.errors import InputError, check_range
from models.log import log
from models.loras.adapters import LoraRequest
from models.request.imaging import load_image, load_mask, resize_image
from models.request.sizes import MAX_SIDE, size_for_image, within_side

MAX_SEED = 2**32 - 1


@dataclass(frozen=True, kw_only=True)
class Job:
    """A fully decided generation: sizes, steps and seed are final. Families add fields."""

    prompt: str
    width: int
    height: int
    num_outputs: int
    steps: int
    guidance: float
    seed: int
    image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float = 1.0
    loras: tuple[LoraRequest, ...] = ()
    go_fast: bool = False

    @property
    def mode(self) -> str:
        if self.image is None:
            return "txt2img"
        return "inpaint" if self.mask is not None else "img2img"


def at_native_size(job: Job, max_side: int | None, multiple: int) -> tuple[Job, tuple | None]:
    """A model that draws only up to `max_side` per side (the mini models) runs a larger
    job at the largest size of its aspect ratio within that; returns the job to run and
    the size to upscale its pictures to (None: run as asked)."""
    if max_side is None or max(job.width, job.height) <= max_side:
        return job, None
    size = within_side(job.width, job.height, max_side, multiple)
    log.info(
        f"This model draws at most {max_side} px per side (its training range): drawing "
        f"at {size[0]}x{size[1]}, then upscaling to {job.width}x{job.height}."
    )
    image = resize_image(job.image, size) if job.image is not None else None
    mask = job.mask.resize(size, Image.Resampling.NEAREST) if job.mask is not None else None
    native = replace(job, width=size[0], height=size[1], image=image, mask=mask)
    return native, (job.width, job.height)


def resolve_seed(seed: int | None) -> int:
    if seed is None:
        seed = random.SystemRandom().randint(0, MAX_SEED)
    check_range("seed", seed, 0, MAX_SEED)
    log.info(f"Using seed: {seed}")
    return seed


def seeded_generator(seed: int) -> torch.Generator:
    # A CPU generator gives the same noise on every device for a seed.
    return torch.Generator("cpu").manual_seed(seed)


def check_strength(prompt_strength: float, steps: int, steps_run: int) -> None:
    """With an image, a pipeline runs only part of the steps (`steps_run`, by its own
    rounding rule); none at all would return the input unchanged, silently."""
    check_range("prompt_strength", prompt_strength, 0.0, 1.0)
    if steps_run < 1:
        raise InputError(
            f"prompt_strength={prompt_strength} with num_inference_steps={steps} leaves no "
            "denoising step: an input image is changed for about prompt_strength x "
            "num_inference_steps steps. Raise prompt_strength or num_inference_steps."
        )


def load_init_images(
    image: Path | None,
    mask: Path | None,
    *,
    multiple: int,
    megapixels: str,
    max_side: int = MAX_SIDE,
) -> tuple[Image.Image | None, Image.Image | None]:
    """Read the optional input image and mask and bring them to a valid output size."""
    if mask is not None and image is None:
        raise InputError(
            "mask was given without image: inpainting needs both. Send `image` with `mask`, "
            "or leave out `mask`."
        )
    if image is None:
        return None, None
    picture = load_image(image, input_name="image")
    size = size_for_image(
        *picture.size, multiple=multiple, megapixels=megapixels, max_side=max_side
    )
    picture = resize_image(picture, size)
    return picture, (load_mask(mask, size, input_name="mask") if mask is not None else None)

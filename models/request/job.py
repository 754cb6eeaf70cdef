"""What one request asks for, decided before any model work: the job and its input
images. Nothing here touches a pipeline; the checks plan() shares are models/request/
checks.py."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image

from models.errors import InputError
from models.log import log
from models.loras.inputs import LoraRequest
from models.request.imaging import load_image, load_mask, resize_image
from models.request.sizes import MAX_SIDE, size_for_image, within_side


@dataclass(frozen=True, kw_only=True)
class Job:
    """A fully decided generation: mode, sizes, steps and seed are final. Families add
    fields of their own."""

    # The pipeline to run, one of the spec's `pipelines` (txt2img, img2img, inpaint...).
    mode: str
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
    # Other pictures a mode is conditioned on, at the output size (a control image, a
    # reference image), by the name its pipeline argument has.
    conditioning: dict[str, Image.Image] = field(default_factory=dict)
    # Conditioning pictures returned after the generated ones, as the engine used them (a
    # control image after preprocessing). They are the user's own input, not checked for
    # safety.
    returned: tuple[str, ...] = ()
    loras: tuple[LoraRequest, ...] = ()
    go_fast: bool = False
    # Skip steps with the denoiser's step cache (models/engine/caching.py).
    step_cache: bool = False

    @property
    def denoising_calls(self) -> int:
        """The denoiser's calls: every step, or with an input image (strength < 1) the
        ones the pipeline runs (diffusers' rule: the skipped steps are rounded down)."""
        return self.steps - int(max(self.steps - self.steps * self.strength, 0))


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
    conditioning = {name: resize_image(p, size) for name, p in job.conditioning.items()}
    native = replace(
        job, width=size[0], height=size[1], image=image, mask=mask, conditioning=conditioning
    )
    return native, (job.width, job.height)


def seeded_generator(seed: int) -> torch.Generator:
    # A CPU generator gives the same noise on every device for a seed.
    return torch.Generator("cpu").manual_seed(seed)


def edit_mode(image: Image.Image | None, mask: Image.Image | None) -> str:
    """The mode of a model that edits an optional input image: txt2img without one,
    inpaint with a mask, img2img without."""
    if image is None:
        return "txt2img"
    return "inpaint" if mask is not None else "img2img"


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

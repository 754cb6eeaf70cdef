"""Pieces every model family shares: seeds, devices, progress, input images, outputs."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from models.errors import InputError
from models.imaging import load_image, load_mask, resize_image
from models.log import log
from models.outputs import save_images
from models.safety import SafetyChecker, filter_safe
from models.sizes import size_for_image

MAX_SEED = 2**32 - 1


def check_range(name: str, value: float, low: float, high: float) -> None:
    """The server's schema already enforces ranges; this keeps direct calls honest."""
    if not low <= value <= high:
        raise InputError(f"{name}={value} is out of range: use a value from {low} to {high}.")


def resolve_seed(seed: int | None) -> int:
    if seed is None:
        seed = random.SystemRandom().randint(0, MAX_SEED)
    check_range("seed", seed, 0, MAX_SEED)
    log.info(f"Using seed: {seed}")
    return seed


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def pick_dtype(spec_dtype: str, device: str) -> torch.dtype:
    # Half precision on CPU is slow and partly unsupported; CPU runs in float32.
    if device == "cpu":
        return torch.float32
    return getattr(torch, spec_dtype)


def step_logger(total_steps: int | None = None):
    """A diffusers callback_on_step_end that logs progress instead of a tqdm bar."""

    def callback(pipe, step: int, timestep, callback_kwargs):
        total = total_steps or getattr(pipe, "num_timesteps", None) or "?"
        log.info(f"Step {step + 1}/{total}")
        return {}

    return callback


def check_strength(prompt_strength: float, steps: int) -> None:
    """img2img runs int(steps * strength) steps; zero would be a silent no-op."""
    check_range("prompt_strength", prompt_strength, 0.0, 1.0)
    if int(steps * prompt_strength) < 1:
        needed = 1 / steps
        raise InputError(
            f"prompt_strength={prompt_strength} with num_inference_steps={steps} leaves no "
            f"denoising step (img2img runs prompt_strength x steps steps). Use prompt_strength "
            f">= {needed:.3g} or more steps."
        )


def load_init_images(
    image: Path | None,
    mask: Path | None,
    *,
    multiple: int,
    megapixels: str,
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
    size = size_for_image(*picture.size, multiple=multiple, megapixels=megapixels)
    picture = resize_image(picture, size)
    return picture, (load_mask(mask, size, input_name="mask") if mask is not None else None)


def finish(
    images: list[Image.Image],
    *,
    safety: SafetyChecker | None,
    disable_safety_checker: bool,
    output_format: str,
    output_quality: int,
) -> list[Path]:
    """Drop unsafe images (unless disabled) and write the rest as out-<i>.<ext>."""
    checker = None if disable_safety_checker else safety
    if safety is None and not disable_safety_checker:
        log.info("Safety checker is not loaded in this deployment (SAFETY_CHECKER=0).")
    kept, indices = filter_safe(images, checker)
    return save_images(
        kept, output_format=output_format, output_quality=output_quality, indices=indices
    )


def load_safety(names: tuple[str, str], device: str, resolve) -> SafetyChecker:
    compvis, falcon = (resolve(name) for name in names)
    return SafetyChecker.load(compvis, falcon, device=device)

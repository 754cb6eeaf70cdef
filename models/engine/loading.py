"""Devices, dtypes and loading weights into pipelines: what every family's engine uses
to build its components (and train.py to load what it trains)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.errors import WeightsError
from models.log import log, no_progress_bars
from models.settings import Settings
from models.specs import ModelSpec
from models.weights.resolver import resolve, resolve_custom


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def pick_dtype(spec_dtype: str, device: str) -> torch.dtype:
    # Half precision on CPU is slow and partly unsupported; CPU runs in float32.
    if device == "cpu":
        return torch.float32
    return getattr(torch, spec_dtype)


def main_weights(spec: ModelSpec, settings: Settings) -> tuple[Path, Path | None]:
    """The variant's main weights, or MODEL_WEIGHTS in their place, and for a single-file
    checkpoint the diffusers folder whose configs describe it (None: diffusers picks the
    base model its keys match and reads that model's configs from the Hugging Face hub)."""
    if not settings.model_weights:
        return resolve(spec.weights, settings), None
    path = resolve_custom(settings.model_weights, settings)
    log.info(f"Using MODEL_WEIGHTS={settings.model_weights} in place of {spec.weights}")
    if path.is_dir():
        return path, None
    if spec.single_file == "transformer":  # the other components come from the variant
        return path, resolve(spec.weights, settings)
    try:
        return path, resolve(spec.weights, settings, download=False)
    except WeightsError:
        return path, None


def _variant(folder: Path) -> str | None:
    # Hugging Face fp16 downloads hold only `*.fp16.safetensors`, which diffusers and
    # transformers load only when asked for that variant by name.
    return "fp16" if any(folder.glob("*/*.fp16.safetensors")) else None


def load_pipeline(cls, weights: Path, *, dtype, device: str, config: Path | None = None, **kw):
    """A pipeline from a diffusers folder, or from one checkpoint file (fine-tunes are
    often shared that way) with `config` describing its components."""
    no_progress_bars()
    if weights.is_file():
        log.info(f"Loading single-file checkpoint {weights.name}")
        pipe = cls.from_single_file(
            str(weights), config=str(config) if config else None, dtype=dtype, **kw
        )
    else:
        pipe = cls.from_pretrained(weights, dtype=dtype, variant=_variant(weights), **kw)
    return pipe.to(device)


def derive_pipes(base, classes: dict, *, dtype, **kw) -> dict:
    """Pipelines of other modes sharing `base`'s components. from_pipe casts the shared
    components to its `dtype` argument, float32 unless given: passing the base's dtype
    keeps half-precision weights half-precision on a GPU."""
    pipes = {mode: cls.from_pipe(base, dtype=dtype, **kw) for mode, cls in classes.items()}
    for pipe in (base, *pipes.values()):
        pipe.set_progress_bar_config(disable=True)
    return pipes

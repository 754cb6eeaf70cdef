"""The one module that reads environment variables.

Everything else receives these values as arguments, so tests and scripts can
set them explicitly instead of patching the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    # Which variant a predictor serves; empty means the predictor's default.
    model: str
    # Where weights/<name> folders live.
    weights_dir: Path
    # Token for gated Hugging Face repos (FLUX.1-dev).
    hf_token: str | None
    # False skips loading the safety checkers entirely (private deployments).
    safety_checker: bool
    # "auto" picks cuda when available, else cpu.
    device: str
    # Replaces the variant's main weights (e.g. an SDXL fine-tune): a local diffusers
    # folder, a single .safetensors checkpoint, or a Hugging Face repo id (owner/name).
    model_weights: str | None = None


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def load_settings() -> Settings:
    env = os.environ
    return Settings(
        model=env.get("MODEL_NAME", ""),
        weights_dir=Path(env.get("WEIGHTS_DIR", str(REPO_ROOT / "weights"))),
        hf_token=env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None,
        safety_checker=_flag(env.get("SAFETY_CHECKER"), default=True),
        device=env.get("DEVICE", "auto"),
        model_weights=env.get("MODEL_WEIGHTS") or None,
    )

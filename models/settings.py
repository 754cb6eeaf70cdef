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
    # Downloaded LoRAs (models/loras/cache.py) and the disk space they may use.
    lora_cache_dir: Path = REPO_ROOT / "weights" / "lora-cache"
    lora_cache_gb: float = 20.0
    # LoRAs kept loaded on the device between requests (least recently used unloaded).
    lora_max_loaded: int = 8
    # go_fast: "auto" compiles on a GPU and uses fp8 where the GPU multiplies it; "on"
    # forces (COMPILE=on on a CPU, for tests; FP8=on gives weight-only fp8 without fp8
    # matmul); "off" never. LoRA slots of the go_fast model hold LoRAs up to this rank.
    compile: str = "auto"
    fp8: str = "auto"
    lora_target_rank: int = 64
    # Saved compiler artifacts: at the repo root, not under weights/, so that `cog push`
    # puts them in the image (.dockerignore leaves weights/ out).
    compile_cache_dir: Path = REPO_ROOT / "compile-cache"
    # Where Hugging Face, CivitAI and Replicate answer (tests point these at local stand-ins).
    hf_endpoint: str = "https://huggingface.co"
    civitai_endpoint: str = "https://civitai.com"
    replicate_endpoint: str = "https://replicate.com"
    # Stopping (tools/server.py): how long running predictions may go on once the server
    # is asked to stop, before they are cancelled.
    shutdown_grace_s: float = 25.0
    # Written by tools/server.py when the server is asked to stop; holds the time after
    # which the worker cancels what is still running (models/serving/shutdown.py). None: not run
    # by tools/server.py, so nothing tells the worker.
    drain_file: Path | None = None
    # One picture on several GPUs (models/serving/parallel.py): "auto" uses every visible
    # GPU for FLUX, "off" one; a number N runs N processes (on a CPU too, over gloo).
    parallel: str = "auto"


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _number(env, name: str, default: float, kind=float):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be a number (default {default}).") from None


def _choice(env, name: str, choices: tuple[str, ...]) -> str:
    value = (env.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}.")
    return value


def load_settings() -> Settings:
    env = os.environ
    weights_dir = Path(env.get("WEIGHTS_DIR", str(REPO_ROOT / "weights")))
    return Settings(
        model=env.get("MODEL_NAME", ""),
        weights_dir=weights_dir,
        hf_token=env.get("HF_TOKEN") or env.get("HUGGING_FACE_HUB_TOKEN") or None,
        safety_checker=_flag(env.get("SAFETY_CHECKER"), default=True),
        device=env.get("DEVICE", "auto"),
        model_weights=env.get("MODEL_WEIGHTS") or None,
        lora_cache_dir=Path(env.get("LORA_CACHE_DIR") or weights_dir / "lora-cache"),
        lora_cache_gb=_number(env, "LORA_CACHE_GB", 20.0),
        lora_max_loaded=_number(env, "LORA_MAX_LOADED", 8, int),
        compile=_choice(env, "COMPILE", ("auto", "on", "off")),
        fp8=_choice(env, "FP8", ("auto", "on", "off")),
        lora_target_rank=_number(env, "LORA_TARGET_RANK", 64, int),
        compile_cache_dir=Path(env.get("COMPILE_CACHE_DIR") or REPO_ROOT / "compile-cache"),
        hf_endpoint=(env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/"),
        civitai_endpoint=(env.get("CIVITAI_ENDPOINT") or "https://civitai.com").rstrip("/"),
        replicate_endpoint=(env.get("REPLICATE_WEB_ENDPOINT") or "https://replicate.com").rstrip(
            "/"
        ),
        shutdown_grace_s=_number(env, "SHUTDOWN_GRACE_S", 25.0),
        drain_file=Path(env["DRAIN_FILE"]) if env.get("DRAIN_FILE") else None,
        parallel=_parallel(env.get("PARALLEL") or "auto"),
    )


def _parallel(value: str) -> str:
    if value in ("auto", "off") or (value.isdigit() and int(value) >= 1):
        return value
    raise ValueError(
        f"PARALLEL={value!r}: use auto (every visible GPU), off (one), or a number of processes."
    )

"""Models a variant loads beside its pipeline: the safety filter's two checkers, Depth's
depth estimator, Redux's image encoder. Each is a manifest entry whose
`loader` names its function in LOADERS; it is resolved like any weights (fetched or
built once), loaded onto the device at setup, and timed in the log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from models.engine.loading import pick_dtype
from models.log import log
from models.request.safety import SafetyChecker, load_compvis, load_vit_classifier
from models.settings import Settings
from models.specs import ModelSpec
from models.weights.manifest import get_entry
from models.weights.resolver import resolve


def load_depth_estimator(folder: Path, device: str) -> tuple:
    """A depth model transformers' AutoModelForDepthEstimation loads (Depth Anything), and
    its image processor; half precision on a GPU."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    dtype = pick_dtype("float16", device)
    model = AutoModelForDepthEstimation.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval(), AutoImageProcessor.from_pretrained(folder)


def load_redux(folder: Path, device: str):
    """FLUX.1 Redux's SigLIP encoder, its processor and the redux embedder, as diffusers'
    FluxPriorReduxPipeline (without text encoders: the engine gives it the base model's)."""
    from diffusers import FluxPriorReduxPipeline

    dtype = pick_dtype("bfloat16", device)
    return FluxPriorReduxPipeline.from_pretrained(folder, dtype=dtype).to(device)


# WeightsEntry.loader -> function(folder, device) returning what the engine keeps.
LOADERS: dict[str, Callable[[Path, str], Any]] = {
    "compvis-safety": load_compvis,
    "vit-classifier": load_vit_classifier,
    "depth-estimator": load_depth_estimator,
    "flux-redux": load_redux,
}


def load_extras(names: Iterable[str], settings: Settings, device: str) -> dict[str, Any]:
    """{manifest entry: what its loader returned} for `names`, in order."""
    loaded = {}
    for name in names:
        loader = get_entry(name).loader
        if loader not in LOADERS:
            known = ", ".join(LOADERS)
            raise ValueError(
                f"{name}: its manifest entry's loader {loader!r} is not one of {known}"
            )
        started = time.perf_counter()
        loaded[name] = LOADERS[loader](resolve(name, settings), device)
        log.info(f"Loaded {name} in {time.perf_counter() - started:.1f}s")
    return loaded


def load_safety(spec: ModelSpec, settings: Settings, device: str) -> SafetyChecker | None:
    """The two-stage safety filter of `spec` (None when SAFETY_CHECKER=0)."""
    if not settings.safety_checker:
        return None
    stages = load_extras(spec.safety, settings, device)
    return SafetyChecker.from_stages(*(stages[name] for name in spec.safety), device=device)

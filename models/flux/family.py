"""FLUX.1 as the serving model sees it (models/engine/family.py)."""

from __future__ import annotations

from models.engine import loading
from models.engine.family import Family
from models.flux.engine import FluxEngine, load_components
from models.flux.plan import FluxInputs, plan
from models.settings import Settings
from models.specs import ModelSpec


def _load(spec: ModelSpec, settings: Settings, device: str, *, training: bool = False):
    weights, config = loading.main_weights(spec, settings)
    return load_components(spec, weights, device, config=config)


def _warm_up_inputs() -> list[FluxInputs]:
    """One batch of 1 and one of 2 (a batch of 1 is compiled as its own case); other
    sizes, modes and batches reuse these graphs (dynamic shapes)."""
    return [
        FluxInputs(
            prompt="warm-up",
            megapixels="0.25",
            num_outputs=n,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n in (1, 2)
    ]


FLUX = Family(
    name="flux",
    inputs=FluxInputs,
    plan=plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_warm_up_inputs,
)

"""SDXL as the serving model sees it (models/engine/family.py)."""

from __future__ import annotations

from models.engine import loading
from models.engine.family import Family
from models.sdxl.engine import SDXLEngine, load_components
from models.sdxl.plan import SDXLInputs, plan
from models.settings import Settings
from models.specs import ModelSpec
from models.weights.resolver import resolve


def _load(spec: ModelSpec, settings: Settings, device: str, *, training: bool = False):
    weights, config = loading.main_weights(spec, settings)
    refiner = None
    if spec.refiner and not training:
        refiner = resolve(spec.refiner, settings)
    return load_components(spec, weights, device, refiner=refiner, config=config)


def _warm_up_inputs() -> list[SDXLInputs]:
    """Guidance doubles the UNet's batch: 1 output with and without guidance gives
    batches of 2 and 1 (compiled as its own case), 2 outputs a batch of 4."""
    cases = ((1, 7.5), (2, 7.5), (1, 0.0))
    return [
        SDXLInputs(
            prompt="warm-up",
            width=512,
            height=512,
            num_outputs=n,
            guidance_scale=g,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n, g in cases
    ]


SDXL = Family(
    name="sdxl",
    inputs=SDXLInputs,
    plan=plan,
    load_components=_load,
    engine=SDXLEngine,
    warm_up_inputs=_warm_up_inputs,
)

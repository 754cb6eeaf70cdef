"""The FLUX model a predictor serves: setup once, predict many times."""

from __future__ import annotations

from models.engine import loading
from models.flux.engine import FluxEngine, load_components
from models.flux.plan import FluxInputs, plan
from models.serving.model import DiffusionModel
from models.settings import Settings
from models.specs import ModelSpec


class FluxModel(DiffusionModel):
    """Everything a FLUX predictor does, without Cog: setup once, predict many times."""

    plan = staticmethod(plan)
    inputs = FluxInputs
    engine = FluxEngine

    @classmethod
    def load_components(cls, spec: ModelSpec, settings: Settings, device: str, *, training=False):
        weights, config = loading.main_weights(spec, settings)
        return load_components(spec, weights, device, config=config)

    def warm_up_inputs(self) -> list[FluxInputs]:
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

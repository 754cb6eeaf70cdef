"""The SDXL model a predictor serves: setup once, predict many times."""

from __future__ import annotations

from models.engine import loading
from models.sdxl.engine import SDXLEngine, load_components
from models.sdxl.plan import SDXLInputs, plan
from models.serving.model import DiffusionModel
from models.settings import Settings
from models.specs import ModelSpec
from models.weights.resolver import resolve


class SDXLModel(DiffusionModel):
    """Everything the SDXL predictor does, without Cog: setup once, predict many times."""

    plan = staticmethod(plan)
    inputs = SDXLInputs
    engine = SDXLEngine

    @classmethod
    def load_components(cls, spec: ModelSpec, settings: Settings, device: str, *, training=False):
        weights, config = loading.main_weights(spec, settings)
        refiner = None
        if spec.refiner and not training:
            refiner = resolve(spec.refiner, settings)
        return load_components(spec, weights, device, refiner=refiner, config=config)

    def warm_up_inputs(self) -> list[SDXLInputs]:
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

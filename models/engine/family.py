"""What a model family plugs into the serving model (models/serving/model.py): one record
per family, read instead of branching on its name. A new family is a package with its
inputs, plan(), engine and a Family like models/flux/family.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from models.engine.base import Engine
from models.request.job import Job
from models.specs import ModelSpec


@dataclass(frozen=True)
class Family:
    name: str  # ModelSpec.family
    # The plain inputs dataclass a predictor fills in (the Cog adapter maps its inputs).
    inputs: type
    # (spec, inputs) -> Job: validates everything and decides every value, before any
    # model work; refusals are InputErrors naming the input and the fix.
    plan: Callable[[ModelSpec, Any], Job]
    # (spec, settings, device, training=False) -> the components, loaded once (what
    # train.py trains on too; `training` leaves out what only serving needs).
    load_components: Callable[..., Any]
    # The engine class: (spec, components, device, **options).
    engine: type[Engine]
    # Requests that compile every graph the go_fast model needs (warm-up at setup); the
    # step cache's requests are added where the spec has one (warm_up_requests).
    warm_up_inputs: Callable[[], list]

    def warm_up_requests(self, spec: ModelSpec) -> list:
        """warm_up_inputs, and where the spec has a step cache the same with it on, over
        enough steps to skip some (a cached step runs other code than a computed one)."""
        requests = self.warm_up_inputs()
        if not spec.step_cache:
            return requests
        cached = [replace(r, step_cache=True, num_inference_steps=5) for r in requests]
        return requests + (cached if not spec.go_fast_step_cache else [])

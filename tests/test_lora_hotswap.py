"""LoRAs under torch.compile: a compiled tiny FLUX transformer with LoRA slots swaps LoRAs
of any rank up to the target, in any layout, at any scale, with zero recompiles, and
draws what the eager model draws with the same LoRA."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch._dynamo.utils as dynamo_utils

from models.errors import InputError
from models.flux import FluxInputs, FluxModel, plan
from models.lora_slots import LoraSlots
from models.lora_sources import Tokens
from models.requests import seeded_generator
from models.specs import get_spec
from tools.loras import flux_lora

TARGET_RANK = 8


@pytest.fixture(scope="module")
def compiled(settings, tmp_path_factory):
    """(eager model, compiled fast pipeline, its slots), warmed up with and without LoRA."""
    from diffusers import FluxPipeline

    cache = tmp_path_factory.mktemp("lora-cache")
    model = FluxModel(get_spec("tiny-flux-dev"), replace(settings, safety_checker=False,
                                                         lora_cache_dir=cache))  # fmt: skip
    eager = model.engine.pipes["txt2img"]
    transformer = copy.deepcopy(eager.transformer)
    slots = LoraSlots(transformer, target_rank=TARGET_RANK)
    transformer.compile_repeated_blocks(dynamic=True)
    fast = FluxPipeline.from_pipe(eager, transformer=transformer)
    fast.set_progress_bar_config(disable=True)
    folder = tmp_path_factory.mktemp("loras")
    warm = flux_lora(eager, folder / "warm.safetensors", rank=TARGET_RANK)
    for lora in (None, str(warm)):  # the two graph variants: adapters off, slots on
        generate(model, (fast, slots), lora_weights=lora)
    return model, fast, slots, folder


def generate(model, fast=None, **inputs) -> np.ndarray:
    """One image, on the compiled (fast, slots) pipeline or else the eager one."""
    job = plan(model.spec, FluxInputs(prompt="a red circle", megapixels="0.25", seed=1,
                                      num_inference_steps=2, **inputs))  # fmt: skip
    pipe, slots = fast or (model.engine.pipes["txt2img"], None)
    eager = model.engine.pipes["txt2img"].transformer
    adapters = model.engine.adapters
    with (
        adapters.active(job.loras, Tokens(), job.prompt) as active,
        slots.active(active, eager) if slots else nullcontext(),
    ):
        kwargs = model.engine.base_kwargs(job, seeded_generator(job.seed))
        return pipe(**kwargs, output_type="np").images[0]


def test_ten_swaps_of_loras_and_scales_cause_no_recompile(compiled):
    model, fast, slots, folder = compiled
    made = [
        flux_lora(
            model.engine.pipes["txt2img"],
            folder / f"{i}.safetensors",
            layout=layout,
            rank=rank,
            seed=i,
        )  # fmt: skip
        for i, (layout, rank) in enumerate(
            [("diffusers", 2), ("kohya", 4), ("xlabs", 8), ("comfyui", 4), ("diffusers", 8)]
        )
    ]
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    torch._dynamo.config.error_on_recompile = True  # a recompile fails the test at once
    try:
        for swap in range(10):
            inputs = {"lora_weights": str(made[swap % 5]), "lora_scale": -0.8 + 0.4 * swap}
            if swap % 3 == 0:
                inputs |= {"extra_lora": str(made[(swap + 2) % 5]), "extra_lora_scale": 0.6}
            on_fast = generate(model, (fast, slots), **inputs)
            np.testing.assert_allclose(on_fast, generate(model, **inputs), atol=1e-4)
        without = generate(model, (fast, slots))
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    np.testing.assert_allclose(without, generate(model), atol=1e-4)


def test_a_lora_above_the_target_rank_is_refused_not_recompiled(compiled):
    model, fast, slots, folder = compiled
    big = flux_lora(model.engine.pipes["txt2img"], folder / "big.safetensors", rank=16)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    job = plan(model.spec, FluxInputs(prompt="x", lora_weights=str(big)))
    eager = model.engine.pipes["txt2img"].transformer
    with (
        model.engine.adapters.active(job.loras, Tokens(), job.prompt) as active,
        pytest.raises(InputError, match="rank 16, above the 8.*go_fast=false"),
    ):
        slots.check(active[0][0], eager, "lora_weights")
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs

"""LoRAs under torch.compile, through the go_fast path of a compiled tiny FLUX: LoRAs of
any rank up to the slots', in any layout, at any scale, swap with zero recompiles and draw
what the eager model draws with the same LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo.utils as dynamo_utils
from PIL import Image

from models.errors import InputError
from models.flux.plan import FluxInputs
from tools.fixtures.loras import flux_lora


def generate(model, **inputs) -> np.ndarray:
    defaults = dict(
        prompt="a red circle", megapixels="0.25", seed=1, num_inference_steps=2, output_format="png"
    )
    path = model.predict(FluxInputs(**{**defaults, **inputs}))[0]
    return np.asarray(Image.open(path), dtype=np.int16)


def test_ten_swaps_of_loras_and_scales_cause_no_recompile(compiled_flux, tmp_path):
    pipe = compiled_flux.engine.pipes["txt2img"]
    made = [
        flux_lora(pipe, tmp_path / f"{i}.safetensors", layout=layout, rank=rank, seed=i)
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
            fast = generate(compiled_flux, **inputs)
            eager = generate(compiled_flux, go_fast=False, **inputs)
            assert np.abs(fast - eager).max() <= 1, swap  # rounding to 8 bits, at most
        without = generate(compiled_flux)
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    assert np.abs(without - generate(compiled_flux, go_fast=False)).max() <= 1


def test_a_lora_above_the_slot_rank_is_refused_not_recompiled(compiled_flux, tmp_path):
    pipe = compiled_flux.engine.pipes["txt2img"]
    big = flux_lora(pipe, tmp_path / "big.safetensors", rank=16)
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    with pytest.raises(InputError, match="lora_weights: this LoRA has rank 16, above the 8"):
        generate(compiled_flux, lora_weights=str(big))
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    assert generate(compiled_flux, lora_weights=str(big), go_fast=False).shape == (512, 512, 3)

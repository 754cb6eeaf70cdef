"""go_fast: the compiled (and fp8) copy of the transformer/UNet beside the eager model.

Compiled on this CPU with COMPILE=on (tests/conftest.py `compiled_flux`); fp8 here is
weight-only (FP8=on), the only fp8 torchao runs without a GPU that multiplies fp8.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch._dynamo.utils as dynamo_utils
from PIL import Image

from models.engine.fast import FastPlan, linear_weight_bytes, load_compile_cache, plan_fast
from models.flux.plan import FluxInputs
from models.loras.source import Tokens
from models.request.job import Job, seeded_generator
from models.request.sizes import ASPECT_RATIOS
from models.sdxl.plan import SDXLInputs
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import fast_settings, write_image
from tools.fixtures.loras import flux_lora, sdxl_lora

STEP = dict(num_inference_steps=1, seed=5, output_format="png")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() / 127.5 - 1, b.ravel() / 127.5 - 1  # centred: no free similarity
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize(
    ("compile_setting", "fp8_setting", "device", "expected"),
    [
        (
            "auto",
            "auto",
            "cpu",
            FastPlan(False, None, "CPU: compiling does not pay off here; COMPILE=on forces it"),
        ),
        ("on", "auto", "cpu", FastPlan(True, None, "")),
        (
            "on",
            "on",
            "cpu",
            FastPlan(
                True,
                "weight-only",
                "no fp8 matmul here: weight-only fp8 halves memory, it does not speed up",
            ),
        ),
        (
            "off",
            "off",
            "cpu",
            FastPlan(False, None, "CPU: compiling does not pay off here; COMPILE=on forces it"),
        ),
    ],
)
def test_what_go_fast_does_follows_the_settings(compile_setting, fp8_setting, device, expected):
    assert plan_fast(compile_setting, fp8_setting, device) == expected


def test_compiled_output_equals_eager_within_one_level(compiled_flux):
    inputs = dict(prompt="a blue square", megapixels="0.25", **STEP)
    fast = pixels(compiled_flux.predict(FluxInputs(**inputs, go_fast=True))[0])
    eager = pixels(compiled_flux.predict(FluxInputs(**inputs, go_fast=False))[0])
    assert np.abs(fast - eager).max() <= 1  # 8-bit rounding of nearly equal floats


def test_no_recompile_for_any_size_mode_or_batch_after_warm_up(compiled_flux, tmp_path, caplog):
    image = write_image(tmp_path / "in.png", size=(600, 440))
    mask = write_image(tmp_path / "mask.png", size=(600, 440), mode="L", color=255)
    requests = [
        dict(aspect_ratio=ratio, megapixels=mp, num_outputs=1 + i % 4)
        for i, (ratio, mp) in enumerate((r, m) for r in ASPECT_RATIOS for m in ("1", "0.25"))
    ]
    requests += [dict(image=image, num_outputs=n) for n in (1, 3)]
    requests += [dict(image=image, mask=mask, megapixels=mp) for mp in ("0.25", "match_input")]
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    torch._dynamo.config.error_on_recompile = True
    try:
        with caplog.at_level(logging.INFO, logger="models"):
            jobs = [
                denoise(compiled_flux, FluxInputs(prompt="x", go_fast=True, **STEP, **r))
                for r in requests
            ]
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    assert caplog.text.count("go_fast: compiled, no fp8") == len(requests)
    assert {j.mode for j in jobs} == {"txt2img", "img2img", "inpaint"}
    assert len({(j.width, j.height) for j in jobs}) >= 20
    assert {j.num_outputs for j in jobs} == {1, 2, 3, 4}


def test_the_step_cache_needs_no_new_graph_and_draws_as_eager(compiled_flux, tmp_path, caplog):
    """The cache's hooks sit in the compiled blocks: on or off, at any size, step count,
    mode and LoRA, no request compiles anything after the warm-up."""
    image = write_image(tmp_path / "in.png", size=(600, 440))
    lora = flux_lora(compiled_flux.engine.pipes["txt2img"], tmp_path / "l.safetensors", rank=4)
    ratios, steps = list(ASPECT_RATIOS)[:6], (4, 7, 9, 12, 5, 8)
    requests = [
        dict(aspect_ratio=ratios[i], megapixels="0.25", num_outputs=1 + i % 3,
             step_cache=i % 2 == 0, num_inference_steps=steps[i])
        for i in range(6)
    ]  # fmt: skip
    requests += [dict(image=image, step_cache=True, num_inference_steps=10)]
    requests += [dict(step_cache=True, num_inference_steps=6, lora_weights=str(lora), lora_scale=s)
                 for s in (0.5, 1.5)]  # fmt: skip
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    torch._dynamo.config.error_on_recompile = True
    try:
        with caplog.at_level(logging.INFO, logger="models"):
            for r in requests:
                denoise(compiled_flux, FluxInputs(prompt="x", go_fast=True, **r))
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    assert caplog.text.count("Step cache on") == 6 and caplog.text.count("Step cache off") == 3
    inputs = dict(prompt="a red circle", megapixels="0.25", step_cache=True, **STEP)
    inputs["num_inference_steps"] = 7
    fast = pixels(compiled_flux.predict(FluxInputs(**inputs, go_fast=True))[0])
    eager = pixels(compiled_flux.predict(FluxInputs(**inputs, go_fast=False))[0])
    assert np.abs(fast - eager).max() <= 2


def denoise(model, inputs) -> Job:
    """The request's path up to the latents: what compiles is the transformer, so the VAE
    decode, safety check and image encoding are left out (they cost most at 1 MP here)."""
    job = model.plan(model.spec, inputs)
    engine = model.engine
    with engine.request(job, Tokens()) as (pipe,), torch.inference_mode():
        job, extra = engine.prepare(job)
        args = {**engine.call_args(job, seeded_generator(job.seed)), **extra}
        pipe(**args, output_type="latent")
    return job


def test_go_fast_repeats_itself_for_a_seed(compiled_flux):
    # cog-flux's go_fast outputs vary between runs of one seed; ours must not.
    inputs = dict(prompt="a yellow star", megapixels="0.25", **STEP, go_fast=True)
    first = compiled_flux.predict(FluxInputs(**inputs))[0].read_bytes()
    assert compiled_flux.predict(FluxInputs(**inputs))[0].read_bytes() == first


def test_go_fast_false_is_bit_identical_around_a_go_fast_request(compiled_flux):
    inputs = dict(prompt="a green triangle", megapixels="0.25", **STEP)
    first = compiled_flux.predict(FluxInputs(**inputs, go_fast=False))[0].read_bytes()
    compiled_flux.predict(FluxInputs(**inputs, go_fast=True))
    assert compiled_flux.predict(FluxInputs(**inputs, go_fast=False))[0].read_bytes() == first


def test_the_compile_cache_is_saved_after_warm_up_and_loads(compiled_flux, caplog):
    folder = compiled_flux.settings.compile_cache_dir
    (saved,) = folder.glob("tiny-flux-dev-*.bin")
    assert saved.stat().st_size > 0
    with caplog.at_level(logging.INFO, logger="models"):
        assert load_compile_cache(saved)
    assert "Loaded compile cache" in caplog.text


@pytest.fixture(scope="module")
def fp8_flux(settings, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fp8")
    return DiffusionModel(get_spec("tiny-flux-dev"), fast_settings(settings, folder, fp8="on"))


def test_fp8_halves_the_quantized_layers_and_keeps_the_listed_ones(fp8_flux):
    fast, eager = fp8_flux.engine.fast.model, fp8_flux.engine.eager
    for name, layer in fast.named_modules():
        if isinstance(layer, torch.nn.Linear) and ".lora_" not in name:
            quantized = type(layer.weight).__name__ == "Float8Tensor"
            assert quantized != name.startswith(fp8_flux.spec.fp8_keep), name
    blocks = [(m.transformer_blocks, m.single_transformer_blocks) for m in (fast, eager)]
    fp8, full = (sum(linear_weight_bytes(b) for b in pair) for pair in blocks)
    # float32 (the tiny model on a CPU) -> 1 byte + one scale per row: about a quarter; in
    # bfloat16 on a GPU the same layers take half.
    assert fp8 < 0.3 * full, (fp8, full)


def test_a_lora_on_the_fp8_path_draws_what_it_draws_at_full_precision(fp8_flux, tmp_path):
    pipe = fp8_flux.engine.pipes["txt2img"]
    lora = str(flux_lora(pipe, tmp_path / "l.safetensors", rank=8, seed=2))
    inputs = dict(prompt="a red circle", megapixels="0.25", lora_weights=lora, **STEP)
    fast = pixels(fp8_flux.predict(FluxInputs(**inputs, go_fast=True))[0])
    full = pixels(fp8_flux.predict(FluxInputs(**inputs, go_fast=False))[0])
    base = pixels(
        fp8_flux.predict(FluxInputs(**{**inputs, "lora_weights": None}, go_fast=False))[0]
    )
    assert cosine(fast, full) >= 0.98
    assert np.abs(fast - base).mean() > 2 * np.abs(fast - full).mean()  # the LoRA is there


def test_sdxl_go_fast_path_with_fp8_and_a_lora(settings, tmp_path):
    model = DiffusionModel(get_spec("tiny-sdxl"), fast_settings(settings, tmp_path, fp8="on"))
    lora = str(sdxl_lora(model.engine.pipes["txt2img"], tmp_path / "l.safetensors", rank=4))
    inputs = dict(
        prompt="a red circle",
        width=256,
        height=256,
        lora_weights=lora,
        num_inference_steps=3,
        seed=5,
        output_format="png",
    )
    fast = pixels(model.predict(SDXLInputs(**inputs, go_fast=True))[0])
    full = pixels(model.predict(SDXLInputs(**inputs, go_fast=False))[0])
    assert cosine(fast, full) >= 0.98


def test_warm_cache_says_when_there_is_nothing_to_compile(monkeypatch, capsys):
    from tools.warm_cache import main

    monkeypatch.setenv("SAFETY_CHECKER", "0")
    monkeypatch.setenv("COMPILE", "off")
    assert main(["tiny-flux-schnell"]) == 1
    assert "Nothing to warm: go_fast here is eager" in capsys.readouterr().err

"""go_fast on the editing and control models, as on dev (tests/engine/test_fast.py): Fill,
Kontext and Canny compiled on this CPU (COMPILE=on) with LoRA slots, warmed up at setup,
then every size, mode and batch, and LoRAs swapped at several scales, without one new
graph."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch._dynamo.utils as dynamo_utils
from PIL import Image

from models.flux.control import ControlInputs
from models.flux.fill import FillInputs
from models.flux.kontext import KontextInputs
from models.request.sizes import ASPECT_RATIOS
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import fast_settings, write_image
from tests.engine.test_fast import denoise
from tools.fixtures.loras import flux_lora

pytestmark = pytest.mark.slow  # compiles three models


def half_mask(path, size):
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    mask.save(path)
    return path


def no_new_graph(model, requests, caplog) -> list:
    """Run every request to its latents on the go_fast path; fail on any recompile."""
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    torch._dynamo.config.error_on_recompile = True
    try:
        with caplog.at_level(logging.INFO, logger="models"):
            jobs = [denoise(model, inputs) for inputs in requests]
    finally:
        torch._dynamo.config.error_on_recompile = False
    assert dynamo_utils.counters["stats"]["unique_graphs"] == graphs
    assert caplog.text.count("go_fast: compiled, no fp8") == len(requests)
    return jobs


def loras(model, folder) -> list[str]:
    pipe = model.engine.pipes[model.spec.modes[0]]
    shapes = [("diffusers", 2), ("kohya", 4), ("diffusers", 8)]
    return [
        str(flux_lora(pipe, folder / f"{i}.safetensors", layout=layout, rank=rank, seed=i))
        for i, (layout, rank) in enumerate(shapes)
    ]


def test_fill_compiles_once_for_every_size_batch_outpaint_and_lora(settings, tmp_path, caplog):
    model = DiffusionModel(
        get_spec("tiny-flux-fill-dev"), fast_settings(settings, tmp_path, compile="on")
    )
    made = loras(model, tmp_path)
    requests = []
    for i, size in enumerate([(320, 256), (600, 440), (256, 640), (1000, 700)]):
        image = write_image(tmp_path / f"in{i}.png", size=size)
        mask = half_mask(tmp_path / f"mask{i}.png", size)
        for j, extra in enumerate(
            [dict(), dict(megapixels="0.25"), dict(outpaint="zoom out 1.5x"), dict(num_outputs=3)]
        ):
            lora = dict(lora_weights=made[(i + j) % 3], lora_scale=0.5 * j - 0.5) if j % 2 else {}
            requests.append(FillInputs(prompt="x", image=image, mask=mask, num_inference_steps=1,
                                       seed=i, go_fast=True, **extra, **lora))  # fmt: skip
    jobs = no_new_graph(model, requests, caplog)
    assert len({(j.width, j.height) for j in jobs}) >= 8
    assert {j.num_outputs for j in jobs} == {1, 3} and any(j.loras for j in jobs)


def test_kontext_compiles_once_for_every_shape_region_edit_and_lora(settings, tmp_path, caplog):
    model = DiffusionModel(
        get_spec("tiny-flux-kontext-dev"), fast_settings(settings, tmp_path, compile="on")
    )
    made = loras(model, tmp_path)
    pictures = [write_image(tmp_path / f"in{i}.png", size=s) for i, s in
                enumerate([(300, 200), (200, 300), (500, 500)])]  # fmt: skip
    mask = write_image(tmp_path / "mask.png", size=(64, 64), mode="L", color=255)
    requests = [
        KontextInputs(prompt="x", input_image=pictures[i % 3], aspect_ratio=ratio,
                      num_inference_steps=4, seed=i, go_fast=True,
                      **(dict(lora_weights=made[i % 3], lora_scale=0.4 * i - 1) if i % 2 else {}))
        for i, ratio in enumerate(["match_input_image", *list(ASPECT_RATIOS)[:4]])
    ]  # fmt: skip
    requests.append(KontextInputs(prompt="x", input_image=pictures[0], mask=mask,
                                  num_inference_steps=4, seed=9, go_fast=True))  # fmt: skip
    jobs = no_new_graph(model, requests, caplog)
    assert {j.mode for j in jobs} == {"edit", "edit-region"}
    assert len({(j.width, j.height) for j in jobs}) >= 4 and any(j.loras for j in jobs)


def test_canny_compiles_once_for_every_size_batch_map_and_lora(settings, tmp_path, caplog):
    model = DiffusionModel(
        get_spec("tiny-flux-canny-dev"), fast_settings(settings, tmp_path, compile="on")
    )
    made = loras(model, tmp_path)
    requests = []
    for i, size in enumerate([(320, 256), (600, 440), (256, 640)]):
        picture = write_image(tmp_path / f"in{i}.png", size=size)
        for j, extra in enumerate(
            [dict(), dict(megapixels="0.25", control_preprocess=False), dict(num_outputs=3)]
        ):
            lora = dict(lora_weights=made[(i + j) % 3], lora_scale=0.5 * j - 0.5) if j != 1 else {}
            requests.append(ControlInputs(prompt="x", control_image=picture, num_inference_steps=1,
                                          seed=i, go_fast=True, **extra, **lora))  # fmt: skip
    jobs = no_new_graph(model, requests, caplog)
    assert len({(j.width, j.height) for j in jobs}) >= 6
    assert {j.preprocess for j in jobs} == {True, False} and any(j.loras for j in jobs)
    assert caplog.text.count("Control image: canny map") == 6


def test_the_compiled_fill_draws_what_the_eager_one_does(settings, tmp_path):
    """The go_fast path of an editing model is the same model, compiled: within rounding."""
    model = DiffusionModel(
        get_spec("tiny-flux-fill-dev"), fast_settings(settings, tmp_path, compile="on")
    )
    image = write_image(tmp_path / "in.png", size=(320, 256))
    mask = half_mask(tmp_path / "mask.png", (320, 256))
    common = dict(prompt="x", image=image, mask=mask, num_inference_steps=2, seed=3,
                  output_format="png")  # fmt: skip
    fast, eager = (
        np.asarray(Image.open(model.predict(FillInputs(**common, go_fast=g))[0]), dtype=np.int16)
        for g in (True, False)
    )
    assert np.abs(fast - eager).max() <= 1

"""FLUX.1 Kontext on tiny-flux-kontext-dev through the plain model API: sizes (the input's
shape at Kontext's trained resolutions, or the aspect-ratio table), region edits with a
mask, one picture a request, seeds and refusals."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from models.flux.kontext import KontextInputs, kontext_size, plan
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import assert_plan_rejects, write_image


@pytest.fixture(scope="module")
def kontext(settings):
    spec = get_spec("tiny-flux-kontext-dev")
    return DiffusionModel(spec, replace(settings, safety_checker=False))


def test_match_input_image_is_the_nearest_trained_resolution(kontext, tmp_path, caplog):
    picture = write_image(tmp_path / "in.png", size=(300, 200))
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(kontext.spec, KontextInputs(prompt="make it red", input_image=picture))
    # 300x200 is 3:2; Kontext's nearest trained size is 1248x832.
    assert (job.mode, job.width, job.height) == ("edit", 1248, 832)
    assert job.image.size == (1248, 832) and job.mask is None
    assert (job.steps, job.guidance, job.num_outputs) == (28, 2.5, 1)
    assert "Image resized from 300x200 to 1248x832" in caplog.text


def test_kontext_sizes_are_diffusers_own_choice():
    from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

    assert kontext_size(1000, 1000) == (1024, 1024)
    assert kontext_size(400, 1000) in PREFERRED_KONTEXT_RESOLUTIONS
    assert kontext_size(400, 1000)[0] < kontext_size(400, 1000)[1]


def test_another_aspect_ratio_sets_the_output_size(kontext, tmp_path):
    picture = write_image(tmp_path / "in.png", size=(300, 200))
    job = plan(kontext.spec, KontextInputs(prompt="x", input_image=picture, aspect_ratio="9:16"))
    assert (job.width, job.height) == (768, 1344) and job.image.size == (1248, 832)


def test_a_mask_makes_a_region_edit_in_the_pictures_frame(kontext, tmp_path, caplog):
    picture = write_image(tmp_path / "in.png", size=(300, 200))
    mask = write_image(tmp_path / "mask.png", size=(150, 100), mode="L", color=255)
    inputs = KontextInputs(prompt="x", input_image=picture, mask=mask, aspect_ratio="1:1")
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(kontext.spec, inputs)
    assert (job.mode, job.width, job.height) == ("edit-region", 1248, 832)
    assert job.mask.size == (1248, 832)
    assert "aspect_ratio is ignored with a mask" in caplog.text


@pytest.mark.parametrize("mask", [False, True])
def test_an_edit_is_one_picture_and_repeats_for_a_seed(kontext, tmp_path, mask):
    picture = write_image(tmp_path / "in.png", size=(96, 96))
    extra = {}
    if mask:
        extra["mask"] = write_image(tmp_path / "mask.png", size=(96, 96), mode="L", color=255)
    inputs = KontextInputs(prompt="make it red", input_image=picture, num_inference_steps=4,
                           seed=5, output_format="png", **extra)  # fmt: skip
    (first,) = kontext.predict(inputs)
    first = np.asarray(Image.open(first))
    again = np.asarray(Image.open(kontext.predict(inputs)[0]))
    assert first.shape == (1024, 1024, 3) and np.array_equal(first, again)
    other = np.asarray(Image.open(kontext.predict(replace(inputs, seed=6))[0]))
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("mask", [False, True])
def test_an_edit_is_drawn_at_the_size_planned(kontext, tmp_path, mask):
    # diffusers' Kontext pipelines scale any size they are given to 1 MP unless told the
    # area; a mini model's native size (at most 128 px a side) is far below it.
    from models.loras.source import Tokens
    from models.request.job import at_native_size

    picture = write_image(tmp_path / "in.png", size=(300, 200))
    extra = {"mask": write_image(tmp_path / "m.png", (300, 200), "L", 255)} if mask else {}
    inputs = KontextInputs(prompt="x", input_image=picture, num_inference_steps=4, **extra)
    job, _ = at_native_size(plan(kontext.spec, inputs), 192, kontext.spec.size_multiple)
    [image] = kontext.engine.generate(job, Tokens())
    assert image.size == (job.width, job.height) == (192, 128)


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(), ["input_image is required"]),
        (dict(input_image="in.png", num_inference_steps=3), ["num_inference_steps", "4"]),
        (dict(input_image="in.png", guidance=11), ["guidance", "10"]),
        (dict(input_image="in.png", aspect_ratio="7:3"), ["aspect_ratio", "match_input_image"]),
    ],
)
def test_bad_inputs_name_the_input(kontext, tmp_path, inputs, words):
    write_image(tmp_path / "in.png")
    values = {k: tmp_path / v if k == "input_image" else v for k, v in inputs.items()}
    assert_plan_rejects(kontext, tmp_path, values, words)

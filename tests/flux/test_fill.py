"""FLUX.1 Fill on tiny-flux-fill-dev through the plain model API: what is repainted (the
mask, the picture's transparency, an outpainted canvas), sizes, seeds and refusals."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.flux.fill import OUTPAINT, FillInputs, plan
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import assert_plan_rejects, write_image


@pytest.fixture(scope="module")
def fill(settings):
    return DiffusionModel(get_spec("tiny-flux-fill-dev"), replace(settings, safety_checker=False))


def half_mask(path, size=(320, 256)):
    """White (repaint) on the left half."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    mask.save(path)
    return path


def with_hole(path, size=(320, 256), hole=(100, 60, 220, 180)):
    """An opaque picture with a transparent rectangle."""
    picture = Image.new("RGBA", size, (200, 40, 40, 255))
    picture.paste((0, 0, 0, 0), hole)
    picture.save(path)
    return path


def white(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask) >= 128


def test_the_mask_decides_and_keeps_its_place_at_the_output_size(fill, tmp_path, caplog):
    image = write_image(tmp_path / "in.png", size=(320, 256))
    mask = half_mask(tmp_path / "mask.png", size=(160, 128))  # another size: resized
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(fill.spec, FillInputs(prompt="a door", image=image, mask=mask))
    assert (job.mode, job.width, job.height) == ("fill", 320, 256)
    assert job.image.size == job.mask.size == (320, 256)
    repaint = white(job.mask)
    assert repaint[:, :160].all() and not repaint[:, 160:].any()
    assert "Input mask resized from 160x128 to 320x256 to match the image" in caplog.text
    assert (job.steps, job.guidance) == (28, 30.0)


def test_transparent_pixels_are_repainted_without_a_mask(fill, tmp_path, caplog):
    image = with_hole(tmp_path / "hole.png")
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(fill.spec, FillInputs(prompt="a door", image=image))
    repaint = white(job.mask)
    assert repaint[60:180, 100:220].all() and repaint.sum() == 120 * 120
    assert "Repainting the image's transparent pixels (18% of it)" in caplog.text


def test_a_mask_wins_over_transparency_and_says_so(fill, tmp_path, caplog):
    image, mask = with_hole(tmp_path / "hole.png"), half_mask(tmp_path / "mask.png")
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(fill.spec, FillInputs(prompt="x", image=image, mask=mask))
    assert white(job.mask)[:, :160].all() and not white(job.mask)[:, 160:].any()
    assert "mask decides what to repaint" in caplog.text


@pytest.mark.parametrize("choice", [c for c in OUTPAINT if c != "none"])
def test_outpaint_grows_the_canvas_and_repaints_only_the_new_area(fill, tmp_path, choice):
    image = write_image(tmp_path / "in.png", size=(320, 256), color=(10, 200, 10))
    job = plan(fill.spec, FillInputs(prompt="more", image=image, outpaint=choice))
    left, top, right, bottom = OUTPAINT[choice]
    grown = (round(320 * (1 + left + right)), round(256 * (1 + top + bottom)))
    # match_input keeps the canvas's size, rounded to multiples of 32.
    assert (job.width, job.height) == tuple(round(side / 32) * 32 for side in grown)
    repaint = white(job.mask)
    sx, sy = job.width / grown[0], job.height / grown[1]
    x0, y0 = round(320 * left * sx), round(256 * top * sy)
    x1, y1 = x0 + round(320 * sx), y0 + round(256 * sy)
    assert not repaint[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].any()  # the picture is kept
    # The rest, the new area, is repainted: its share is the canvas's added part.
    assert abs(repaint.mean() - (1 - 320 * 256 / (grown[0] * grown[1]))) < 0.02
    kept = np.asarray(job.image)[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4]
    assert np.abs(kept.astype(int) - (10, 200, 10)).max() < 8


def test_outpaint_adds_to_a_mask(fill, tmp_path):
    image, mask = write_image(tmp_path / "in.png", size=(320, 256)), half_mask(tmp_path / "m.png")
    job = plan(fill.spec, FillInputs(prompt="x", image=image, mask=mask, outpaint="extend right"))
    assert (job.width, job.height) == (480, 256)
    repaint = white(job.mask)
    assert repaint[:, :160].all() and not repaint[:, 164:316].any() and repaint[:, 324:].all()


def test_sizes_follow_megapixels_and_the_1440_cap_in_multiples_of_32(fill, tmp_path):
    big = with_hole(tmp_path / "big.png", size=(3000, 1000), hole=(0, 0, 500, 500))
    job = plan(fill.spec, FillInputs(prompt="x", image=big))
    assert (job.width, job.height) == (1440, 480)
    job = plan(fill.spec, FillInputs(prompt="x", image=big, megapixels="0.25"))
    assert job.width % 32 == job.height % 32 == 0 and abs(job.width * job.height - 2**18) < 2**15


def test_fills_draw_as_asked_and_repeat_for_a_seed(fill, tmp_path):
    image, mask = write_image(tmp_path / "in.png", size=(320, 256)), half_mask(tmp_path / "m.png")
    inputs = FillInputs(prompt="a door", image=image, mask=mask, num_inference_steps=2, seed=7,
                        num_outputs=2, output_format="png")  # fmt: skip
    first = [np.asarray(Image.open(p)) for p in fill.predict(inputs)]
    again = [np.asarray(Image.open(p)) for p in fill.predict(inputs)]
    assert [a.shape for a in first] == [(256, 320, 3)] * 2
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(image="in.png"), ["Nothing to repaint", "mask", "outpaint"]),
        (dict(image="in.png", mask="mask.png"), ["covers the whole image", "black"]),  # white
        (dict(image="in.png", mask="half.png", outpaint="sideways"), ["outpaint", "zoom out 2x"]),
        (dict(image="in.png", mask="half.png", guidance=101), ["guidance", "100"]),
        (dict(image="in.png", mask="half.png", num_inference_steps=51), ["num_inference_steps"]),
        (dict(mask="half.png"), ["image is required"]),
    ],
)
def test_bad_inputs_name_the_input(fill, tmp_path, inputs, words):
    half_mask(tmp_path / "half.png")
    assert_plan_rejects(fill, tmp_path, inputs, words)


def test_a_refused_fill_costs_no_generation(fill, tmp_path, monkeypatch):
    monkeypatch.setattr(fill.engine, "generate", lambda *a, **k: pytest.fail("generated"))
    image = write_image(tmp_path / "in.png")
    with pytest.raises(InputError, match="Nothing to repaint"):
        fill.predict(FillInputs(prompt="x", image=image))

"""FLUX.1 Canny and Depth on their tiny twins through the plain model API: the control
image sized and preprocessed (kornia's Canny, the tiny Depth Anything), the map returned
when asked, the output following it, and refusals."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.flux.conditioning import canny_map
from models.flux.control import ControlInputs, plan
from models.request.safety import NSFWError
from models.serving.model import DiffusionModel, finish
from models.specs import get_spec
from tests.conftest import write_image


def load(settings, name):
    return DiffusionModel(get_spec(name), replace(settings, safety_checker=False))


@pytest.fixture(scope="module")
def canny(settings):
    return load(settings, "tiny-flux-canny-dev")


@pytest.fixture(scope="module")
def depth(settings):
    return load(settings, "tiny-flux-depth-dev")


def square(path, size=(320, 256), box=(96, 64, 224, 192)):
    """A white square on black: its edges are known."""
    picture = Image.new("RGB", size, 0)
    picture.paste((255, 255, 255), box)
    picture.save(path)
    return path


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_canny_finds_the_edges_of_a_square_and_nothing_else(tmp_path):
    picture = Image.open(square(tmp_path / "sq.png"))
    edges = np.asarray(canny_map(picture, "cpu").convert("L"))
    assert set(np.unique(edges)) == {0, 255}
    on = edges == 255
    # On the square's four sides (within the blur's reach), nowhere else.
    near = np.zeros_like(on)
    x0, y0, x1, y1 = 96, 64, 224, 192
    near[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3] = True
    near[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = False
    assert on[~near].sum() == 0
    for side in (on[y0 - 3 : y0 + 3, x0 + 8 : x1 - 8], on[y0 + 8 : y1 - 8, x1 - 3 : x1 + 3]):
        assert side.any(axis=0).all() or side.any(axis=1).all()


def test_a_control_job_is_sized_like_its_picture(canny, depth, tmp_path, caplog):
    picture = write_image(tmp_path / "in.png", size=(3000, 1000))
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(canny.spec, ControlInputs(prompt="x", control_image=picture))
    assert (job.mode, job.width, job.height) == ("control", 1440, 480)
    assert job.conditioning["control_image"].size == (1440, 480)
    assert (job.steps, job.guidance, job.preprocess, job.returned) == (28, 30.0, True, ())
    assert "Output size 1440x480" in caplog.text
    small = plan(depth.spec, ControlInputs(prompt="x", control_image=picture, megapixels="0.25"))
    assert small.width % 16 == small.height % 16 == 0 and small.guidance == 10.0
    assert abs(small.width * small.height - 2**18) < 2**15


@pytest.mark.parametrize("name", ["canny", "depth"])
def test_the_map_followed_is_returned_after_the_images(name, canny, depth, tmp_path, caplog):
    model = {"canny": canny, "depth": depth}[name]
    picture = square(tmp_path / "sq.png")
    inputs = ControlInputs(
        prompt="a house",
        control_image=picture,
        return_control_image=True,
        num_outputs=2,
        num_inference_steps=2,
        seed=3,
        output_format="png",
    )
    with caplog.at_level(logging.INFO, logger="models"):
        paths = model.predict(inputs)
    assert len(paths) == 3 and all(Image.open(p).size == (320, 256) for p in paths)
    control = pixels(paths[2])
    assert f"Control image: {name} map of the picture sent" in caplog.text
    assert (control[..., 0] == control[..., 1]).all()  # grey
    if name == "canny":  # the map is kornia's edges of the picture sent
        expected = np.asarray(canny_map(Image.open(picture), "cpu"), dtype=np.int16)
        assert np.array_equal(control, expected)
    else:  # the tiny estimator's depth, stretched to the full range
        assert (control.min(), control.max()) == (0, 255)
    assert not np.array_equal(control, pixels(picture))


def test_a_map_sent_as_is_is_used_as_sent(canny, tmp_path, caplog):
    picture = square(tmp_path / "sq.png")
    inputs = ControlInputs(prompt="x", control_image=picture, control_preprocess=False,
                           return_control_image=True, num_inference_steps=1, seed=1,
                           output_format="png")  # fmt: skip
    with caplog.at_level(logging.INFO, logger="models"):
        paths = canny.predict(inputs)
    assert np.array_equal(pixels(paths[1]), pixels(picture))
    assert "control_preprocess=false" in caplog.text and "Control image:" not in caplog.text


def test_the_output_follows_the_control_image_and_repeats_for_a_seed(canny, tmp_path):
    def draw(picture):
        inputs = ControlInputs(prompt="x", control_image=picture, num_inference_steps=2,
                               seed=5, output_format="png")  # fmt: skip
        return pixels(canny.predict(inputs)[0])

    first = draw(square(tmp_path / "a.png"))
    assert np.array_equal(first, draw(square(tmp_path / "a.png")))
    other = draw(square(tmp_path / "b.png", box=(20, 20, 120, 220)))
    assert np.abs(first - other).mean() > 1


def test_the_map_is_not_returned_alone_when_every_image_is_unsafe():
    class FlagsAll:
        def check(self, images):
            return [type("Verdict", (), dict(unsafe=True, index=i))() for i in range(len(images))]

    images = [Image.new("RGB", (32, 32)) for _ in range(3)]
    with pytest.raises(NSFWError):
        finish(images, safety=FlagsAll(), disable_safety_checker=False, output_format="png",
               output_quality=80, unchecked=1)  # fmt: skip


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(), ["control_image is required", "control_preprocess=false"]),
        (dict(control_image="broken.png"), ["control_image"]),
        (dict(control_image="in.png", guidance=101), ["guidance", "100"]),
        (dict(control_image="in.png", num_inference_steps=51), ["num_inference_steps"]),
        (dict(control_image="in.png", megapixels="2"), ["megapixels", "match_input"]),
    ],
)
def test_bad_inputs_name_the_input(canny, tmp_path, inputs, words):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    write_image(tmp_path / "in.png")
    values = {k: tmp_path / v if k == "control_image" else v for k, v in inputs.items()}
    with pytest.raises(InputError) as err:
        canny.plan(canny.spec, ControlInputs(prompt="x", **values))
    assert all(word in str(err.value) for word in words), str(err.value)


def test_a_refused_request_costs_no_generation(canny, monkeypatch):
    monkeypatch.setattr(canny.engine, "generate", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(InputError, match="control_image is required"):
        canny.predict(ControlInputs(prompt="x"))

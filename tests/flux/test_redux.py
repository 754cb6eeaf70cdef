"""FLUX.1 Redux on its tiny twins (tiny schnell and dev under a tiny SigLIP and redux
embedder) through the plain model API: the picture and the prompt steer the drawing,
redux_strength weighs the picture, the base's weights are shared, refusals."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.flux.redux import ReduxInputs
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import write_image


@pytest.fixture(scope="module")
def redux(settings):
    spec = get_spec("tiny-flux-redux-dev")
    return DiffusionModel(spec, replace(settings, safety_checker=False))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("redux")
    return {
        "red": write_image(folder / "red.png", size=(300, 200), color=(220, 30, 30)),
        "blue": write_image(folder / "blue.png", size=(200, 300), color=(20, 40, 230)),
    }


def draw(model, **inputs) -> np.ndarray:
    request = ReduxInputs(
        num_inference_steps=2, seed=4, megapixels="0.25", output_format="png", **inputs
    )
    return np.asarray(Image.open(model.predict(request)[0]), dtype=np.int16)


def test_the_picture_steers_the_drawing_and_repeats_for_a_seed(redux, pictures):
    red = draw(redux, redux_image=pictures["red"])
    assert red.shape == (512, 512, 3)
    assert np.array_equal(red, draw(redux, redux_image=pictures["red"]))
    # The tiny encoder's 4 tokens move a random model's drawing little, but they move it.
    assert not np.array_equal(red, draw(redux, redux_image=pictures["blue"]))


def test_redux_strength_weighs_the_picture_against_the_prompt(redux, pictures):
    def pair(strength):
        return [
            draw(redux, redux_image=pictures[c], prompt="a cat", redux_strength=strength)
            for c in ("red", "blue")
        ]

    # At 0 the picture's tokens are zero: two pictures draw the same, from the prompt.
    zero = pair(0.0)
    assert np.array_equal(*zero)
    half = pair(0.5)
    assert not np.array_equal(*half)
    assert not np.array_equal(half[0], draw(redux, redux_image=pictures["red"], prompt="a cat"))
    # The prompt still counts at strength 0.
    other = draw(redux, redux_image=pictures["red"], prompt="a dog", redux_strength=0.0)
    assert not np.array_equal(zero[0], other)


def test_sizes_follow_aspect_ratio_and_megapixels(redux, pictures):
    job = redux.plan(
        redux.spec, ReduxInputs(redux_image=pictures["red"], aspect_ratio="16:9", megapixels="1")
    )
    assert (job.mode, job.width, job.height, job.steps, job.guidance) == (
        "redux", 1344, 768, 28, 3.0
    )  # fmt: skip
    assert job.conditioning["redux_image"].size == (300, 200) and job.prompt == ""


def test_redux_is_loaded_on_the_base_weights(redux):
    spec, engine = redux.spec, redux.engine
    assert spec.weight_entries(safety=False) == ("tiny-flux-dev", "tiny-flux-redux")
    base = engine.pipes["redux"]
    # One copy of the text encoders: the prior encodes the prompt with the base's.
    assert engine.prior.text_encoder is base.text_encoder
    assert engine.prior.text_encoder_2 is base.text_encoder_2


def test_schnell_redux_draws_in_its_four_steps(settings, pictures):
    spec = get_spec("tiny-flux-redux-schnell")
    model = DiffusionModel(spec, replace(settings, safety_checker=False))
    job = model.plan(spec, ReduxInputs(redux_image=pictures["blue"]))
    assert (job.steps, job.guidance) == (4, 0.0)
    assert draw(model, redux_image=pictures["blue"], num_outputs=2).shape == (512, 512, 3)


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(), ["redux_image is required"]),
        (dict(redux_image="broken.png"), ["redux_image"]),
        (dict(redux_image="in.png", redux_strength=1.5), ["redux_strength", "0.0 to 1.0"]),
        (dict(redux_image="in.png", megapixels="match_input"), ["megapixels", "0.25"]),
        (dict(redux_image="in.png", aspect_ratio="7:3"), ["aspect_ratio", "16:9"]),
    ],
)
def test_bad_inputs_name_the_input(redux, tmp_path, inputs, words):
    (tmp_path / "broken.png").write_bytes(b"GIF89a not a picture")
    write_image(tmp_path / "in.png")
    values = {k: tmp_path / v if k == "redux_image" else v for k, v in inputs.items()}
    with pytest.raises(InputError) as err:
        redux.plan(redux.spec, ReduxInputs(**values))
    assert all(word in str(err.value) for word in words), str(err.value)

"""FLUX Canny, Depth and Redux through the real Cog HTTP server (coglet), as `script/serve`
runs them: their inputs validated by the schema, the control map returned when asked,
refusals named, the server still serving after each."""

from __future__ import annotations

import pytest

from tests.conftest import assert_still_serving, data_uri, decode, image_bytes, serving
from tools.server import predict

pytestmark = pytest.mark.server

PICTURE = data_uri(image_bytes((192, 128)))


@pytest.fixture(scope="module")
def depth(tmp_path_factory):
    with serving("tiny-flux-depth-dev", tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def redux(tmp_path_factory):
    with serving("tiny-flux-redux-schnell", tmp_path_factory) as url:
        yield url


@pytest.mark.parametrize(
    "inputs, sizes",
    [
        (dict(), [(192, 128)]),
        (dict(return_control_image=True, num_outputs=2), [(192, 128)] * 3),
        (dict(control_preprocess=False, megapixels="0.25", lora_scale=0.5), [(624, 416)]),
    ],
)
def test_depth_draws_from_a_control_image(depth, inputs, sizes):
    request = {"prompt": "a room", "control_image": PICTURE, "num_inference_steps": 1}
    status, body = predict(depth, {**request, **inputs})
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert [decode(uri).size for uri in body["output"]] == sizes
    assert "Mode: control" in body["logs"]
    preprocessed = "Control image: depth map" in body["logs"]
    assert preprocessed == inputs.get("control_preprocess", True)


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"prompt": "x"}, "control_image"),
        ({"prompt": "x", "control_image": PICTURE, "guidance": 101}, "guidance"),
        ({"prompt": "x", "control_image": PICTURE, "megapixels": "2"}, "megapixels"),
    ],
)
def test_depth_schema_refuses_bad_inputs_naming_the_field(depth, inputs, field):
    status, body = predict(depth, inputs)
    assert status == 422 and field in {d["loc"][-1] for d in body["detail"]}, body
    assert_still_serving(depth)


def test_an_unreadable_control_image_fails_naming_it(depth):
    broken = data_uri(b"\x89PNG\r\n\x1a\n not a picture")
    status, body = predict(depth, {"prompt": "x", "control_image": broken})
    assert body["status"] == "failed" and "control_image" in body["error"], body
    assert_still_serving(depth)


@pytest.mark.parametrize(
    "inputs, sizes",
    [
        (dict(), [(1024, 1024)]),
        (dict(prompt="in winter", redux_strength=0.5, aspect_ratio="16:9"), [(1344, 768)]),
        (dict(megapixels="0.25", num_outputs=2), [(512, 512)] * 2),
    ],
)
def test_redux_draws_variations_without_a_prompt(redux, inputs, sizes):
    request = {"redux_image": PICTURE, "num_inference_steps": 1}
    status, body = predict(redux, {**request, **inputs})
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert [decode(uri).size for uri in body["output"]] == sizes
    assert "Mode: redux" in body["logs"]


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"prompt": "x"}, "redux_image"),
        ({"redux_image": PICTURE, "redux_strength": 1.5}, "redux_strength"),
        ({"redux_image": PICTURE, "num_inference_steps": 5}, "num_inference_steps"),
    ],
)
def test_redux_schema_refuses_bad_inputs_naming_the_field(redux, inputs, field):
    status, body = predict(redux, inputs)
    assert status == 422 and field in {d["loc"][-1] for d in body["detail"]}, body
    assert_still_serving(redux)

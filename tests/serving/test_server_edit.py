"""FLUX Fill and Kontext through the real Cog HTTP server (coglet), as `script/serve` runs
them: their inputs validated by the schema, every mode answered, refusals named."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import assert_still_serving, data_uri, decode, image_bytes, serving
from tools.server import predict

pytestmark = pytest.mark.server


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return data_uri(buffer.getvalue())


def with_hole(size=(192, 128)) -> str:
    picture = Image.new("RGBA", size, (30, 60, 220, 255))
    picture.paste((0, 0, 0, 0), (64, 32, 128, 96))
    return png(picture)


def half_mask(size=(192, 128)) -> str:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return png(mask)


@pytest.fixture(scope="module")
def fill(tmp_path_factory):
    with serving("tiny-flux-fill-dev", tmp_path_factory) as url:
        yield url


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    with serving("tiny-flux-kontext-dev", tmp_path_factory) as url:
        yield url


@pytest.mark.parametrize(
    "inputs, size",
    [
        (dict(image=with_hole()), (192, 128)),
        (dict(image=data_uri(image_bytes((192, 128))), mask=half_mask()), (192, 128)),
        (dict(image=with_hole(), outpaint="extend bottom", num_outputs=2), (192, 192)),
        (dict(image=with_hole(), megapixels="0.25", lora_scale=0.5), (640, 416)),
    ],
)
def test_fill_answers_every_way_of_saying_what_to_repaint(fill, inputs, size):
    status, body = predict(fill, {"prompt": "a door", "num_inference_steps": 1, **inputs})
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert [decode(uri).size for uri in body["output"]] == [size] * inputs.get("num_outputs", 1)
    assert "Mode: fill" in body["logs"]


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"prompt": "x"}, "image"),
        ({"prompt": "x", "image": with_hole(), "outpaint": "sideways"}, "outpaint"),
        ({"prompt": "x", "image": with_hole(), "guidance": 101}, "guidance"),
    ],
)
def test_fill_schema_refuses_bad_inputs_naming_the_field(fill, inputs, field):
    status, body = predict(fill, inputs)
    assert status == 422 and field in {d["loc"][-1] for d in body["detail"]}, body
    assert_still_serving(fill)


def test_fill_with_nothing_to_repaint_fails_saying_what_to_send(fill):
    opaque = data_uri(image_bytes((64, 64)))
    status, body = predict(fill, {"prompt": "x", "image": opaque, "num_inference_steps": 1})
    assert body["status"] == "failed" and "Nothing to repaint" in body["error"]
    assert_still_serving(fill)


@pytest.mark.parametrize(
    "inputs, size",
    [
        (dict(), (1248, 832)),
        (dict(aspect_ratio="1:1"), (1024, 1024)),
        (dict(mask=half_mask()), (1248, 832)),
    ],
)
def test_kontext_answers_one_picture(kontext, inputs, size):
    picture = data_uri(image_bytes((192, 128)))
    request = {"prompt": "make it red", "input_image": picture, "num_inference_steps": 4}
    status, body = predict(kontext, {**request, **inputs})
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    assert isinstance(body["output"], str) and decode(body["output"]).size == size


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"prompt": "x"}, "input_image"),
        (
            {"prompt": "x", "input_image": data_uri(image_bytes()), "num_inference_steps": 2},
            "num_inference_steps",
        ),  # fmt: skip
        (
            {
                "prompt": "x",
                "input_image": data_uri(image_bytes()),
                "num_outputs": 2,
                "num_inference_steps": 4,
            },
            None,
        ),  # fmt: skip
    ],
)
def test_kontext_schema_refuses_bad_inputs_naming_the_field(kontext, inputs, field):
    status, body = predict(kontext, inputs)
    if field is None:  # an input it does not have is dropped, as coglet does for any
        assert status == 200 and isinstance(body["output"], str), body
        return
    assert status == 422 and field in {d["loc"][-1] for d in body["detail"]}, body
    assert_still_serving(kontext)

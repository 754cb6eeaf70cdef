"""The FLUX predictor through the real Cog HTTP server (coglet), as `script/serve` runs it."""

from __future__ import annotations

import io
import tempfile

import pytest
from PIL import Image

from tests.conftest import assert_still_serving, data_uri, decode, image_bytes, serving
from tools.server import http_json, predict

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving("tiny-flux-dev", tmp_path_factory) as url:
        yield url


def run(server, **inputs):
    inputs.setdefault("num_inference_steps", 2)
    return predict(server, inputs)


def test_openapi_shows_every_input_with_ranges_and_choices(server):
    status, schema = http_json("GET", f"{server}/openapi.json")
    assert status == 200
    components = schema["components"]["schemas"]
    props = components["Input"]["properties"]
    assert (props["num_inference_steps"]["minimum"], props["num_inference_steps"]["maximum"]) == (
        1,
        50,
    )
    assert (props["guidance"]["minimum"], props["guidance"]["maximum"]) == (0, 10)
    assert len(components["aspect_ratio"]["enum"]) == 11
    assert components["megapixels"]["enum"] == ["1", "0.25", "match_input"]
    assert all(prop.get("description") for prop in props.values())


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"prompt": "x", "num_outputs": "two"}, "num_outputs"),
        ({"prompt": "x", "num_outputs": 5}, "num_outputs"),
        ({"prompt": "x", "guidance": 10.5}, "guidance"),
        ({"prompt": "x", "aspect_ratio": "7:3"}, "aspect_ratio"),
        ({"prompt": "x", "output_format": "gif"}, "output_format"),
        ({"num_outputs": 1}, "prompt"),
    ],
)
def test_bad_inputs_get_422_naming_the_field(server, inputs, field):
    status, body = predict(server, inputs)
    assert status == 422, body
    assert field in {detail["loc"][-1] for detail in body["detail"]}
    assert_still_serving(server)


def test_txt2img_logs_seed_steps_and_safety_summary(server):
    status, body = run(server, prompt="a cat", aspect_ratio="16:9", megapixels="0.25", seed=7)
    assert status == 200 and body["status"] == "succeeded", body
    assert [decode(uri).size for uri in body["output"]] == [(672, 384)]
    logs = body["logs"]
    assert "Using seed: 7" in logs and "Step 2/2" in logs
    assert "Total safe images: 1 out of 1" in logs


def test_same_seed_gives_identical_files(server):
    first = run(server, prompt="a fox", megapixels="0.25", seed=11)[1]["output"]
    second = run(server, prompt="a fox", megapixels="0.25", seed=11)[1]["output"]
    assert first == second


def test_inpainting_with_image_and_mask_returns_the_image_size(server):
    mask = Image.new("L", (500, 330), 0)
    mask.paste(255, (250, 0, 500, 330))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    status, body = run(
        server,
        prompt="a dog",
        image=data_uri(image_bytes((500, 330))),
        mask=data_uri(buf.getvalue()),
        megapixels="match_input",
        num_outputs=2,
        output_format="png",
    )
    assert status == 200 and body["status"] == "succeeded", body
    assert [decode(uri).size for uri in body["output"]] == [(496, 336), (496, 336)]
    assert "Mode: inpaint" in body["logs"]


def test_disabled_safety_checker_logs_nothing_about_safety(server):
    status, body = run(server, prompt="x", megapixels="0.25", disable_safety_checker=True)
    assert body["status"] == "succeeded", body
    assert "safe" not in body["logs"].lower() and "nsfw" not in body["logs"].lower()


@pytest.mark.parametrize(
    "inputs, words",
    [
        ({"mask": data_uri(image_bytes())}, ["mask", "image"]),
        ({"image": data_uri(b"\x89PNG\r\n\x1a\nbroken")}, ["image"]),
        ({"image": data_uri(b"just some text", "text/plain")}, ["image"]),
        ({"image": data_uri(image_bytes()), "prompt_strength": 0.0}, ["prompt_strength"]),
    ],
)
def test_failures_name_the_input_and_the_server_keeps_serving(server, inputs, words):
    status, body = run(server, prompt="x", **inputs)
    assert body["status"] == "failed", body
    for word in words:
        assert word in body["error"], body["error"]
    assert_still_serving(server)
    status, body = run(server, prompt="x", megapixels="0.25", num_inference_steps=1)
    assert body["status"] == "succeeded", body


def test_a_failed_url_input_leaves_no_temporary_file(tmp_path, monkeypatch):
    from cog.types import URLFile, URLPath

    import cog_fixes  # noqa: F401  (what predict.py applies)
    from tools.server import free_port

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    url = f"http://127.0.0.1:{free_port()}/photo.png"  # nothing listens there
    path = URLPath(source=url, filename="photo.png", fileobj=URLFile(url))
    with pytest.raises(OSError):
        path.convert()
    assert list(tmp_path.iterdir()) == []

"""SDXL through the real Cog HTTP server (coglet): modes, refiners, sizes, validation."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.conftest import (
    assert_still_serving,
    data_uri,
    decode,
    image_bytes,
    script_predict,
    serving,
)
from tools.server import http_json, predict

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving("tiny-sdxl", tmp_path_factory) as url:
        yield url


def run(server, **inputs):
    inputs = {"prompt": "a cat", "num_inference_steps": 4, "width": 256, "height": 256, **inputs}
    return predict(server, inputs)


def mask_uri(size) -> str:
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return data_uri(buf.getvalue())


IMAGE = data_uri(image_bytes((320, 200)))
MODES = {
    "txt2img": {},
    "img2img": {"image": IMAGE, "prompt_strength": 0.6},
    "inpaint": {"image": IMAGE, "mask": mask_uri((320, 200)), "prompt_strength": 0.9},
}
REFINERS = {
    "no_refiner": {},
    # Enough steps that, after prompt_strength, base and refiner each get some.
    "expert_ensemble_refiner": {"high_noise_frac": 0.5, "num_inference_steps": 10},
    "base_image_refiner": {"refine_steps": 4},
}


@pytest.mark.parametrize("refine", list(REFINERS))
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_with_every_refine_option(server, mode, refine):
    status, body = run(server, refine=refine, num_outputs=2, **MODES[mode], **REFINERS[refine])
    assert status == 200 and body["status"] == "succeeded", body
    expected = (256, 256) if mode == "txt2img" else (320, 200)
    assert [decode(uri).size for uri in body["output"]] == [expected, expected]
    assert f"Mode: {mode}" in body["logs"]


def test_width_1000_is_kept_and_1001_is_rounded_with_a_log_line(server):
    status, body = run(server, width=1000, height=1000, num_inference_steps=1)
    assert body["status"] == "succeeded", body
    assert decode(body["output"][0]).size == (1000, 1000)
    assert "rounded" not in body["logs"]
    status, body = run(server, width=1001, height=1000, num_inference_steps=1)
    assert body["status"] == "succeeded", body
    width, height = decode(body["output"][0]).size
    assert width % 8 == 0 and height == 1000 and abs(width - 1001) < 8
    assert "1001x1000 rounded" in body["logs"]


def test_unknown_scheduler_gets_422(server):
    status, body = run(server, scheduler="LMS")
    assert status == 422, body
    assert body["detail"][0]["loc"][-1] == "scheduler"
    assert_still_serving(server)


def test_mask_without_image_fails_naming_both(server):
    status, body = run(server, mask=mask_uri((64, 64)))
    assert body["status"] == "failed", body
    assert "mask" in body["error"] and "image" in body["error"]
    assert_still_serving(server)


def test_script_predict_with_a_negative_prompt(tmp_path):
    result = script_predict(
        tmp_path,
        *("--model", "tiny-sdxl", "-i", "prompt=a cat in a hat", "-i", "negative_prompt=blurry"),
        *("-i", "num_inference_steps=2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "output.0.webp") as img:
        assert img.size == (1024, 1024)


def test_servers_of_different_models_run_side_by_side(server, tmp_path_factory):
    with serving("tiny-flux-schnell", tmp_path_factory) as flux:
        _, sdxl_schema = http_json("GET", f"{server}/openapi.json")
        _, flux_schema = http_json("GET", f"{flux}/openapi.json")
        status, _ = predict(flux, {"prompt": "x", "scheduler": "DDIM"})
    assert "scheduler" in sdxl_schema["components"]["schemas"]["Input"]["properties"]
    assert "scheduler" not in flux_schema["components"]["schemas"]["Input"]["properties"]
    assert "aspect_ratio" in flux_schema["components"]["schemas"]["Input"]["properties"]
    assert status == 200  # unknown inputs are dropped, as coglet does; validated per server

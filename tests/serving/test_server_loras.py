"""LoRAs through the real Cog server (coglet), as script/serve runs it: the issue's
acceptance for tiny-flux-dev and tiny-sdxl."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.serving.families import FAMILIES
from models.specs import get_spec
from tests.conftest import assert_still_serving
from tools.fixtures.hub import Hub
from tools.fixtures.loras import lora_for
from tools.server import model_ref, predict, running

INPUTS = {
    "tiny-flux-dev": {"megapixels": "0.25", "num_inference_steps": 2},
    "tiny-sdxl": {"width": 256, "height": 256, "num_inference_steps": 3},
}


def base_pipe(model: str, settings):
    spec = get_spec(model)
    components = FAMILIES[spec.interface].load_components(spec, settings, "cpu", training=True)
    return getattr(components, "base", components)  # SDXL: SDXLComponents


@pytest.mark.server
@pytest.mark.parametrize("model", ["tiny-flux-dev", "tiny-sdxl"])
def test_loras_from_a_local_url_through_the_server(model, settings, tmp_path):
    spec = get_spec(model)
    pipe = base_pipe(model, replace(settings, safety_checker=False))
    make = lora_for(spec.family)
    with Hub() as hub:
        urls = {
            layout: hub.add_file(
                f"{layout}.safetensors",
                make(pipe, tmp_path / f"{layout}.safetensors", layout=layout, seed=4).read_bytes(),
            )
            for layout in ("diffusers", "kohya")
        }
        env = {"LORA_CACHE_DIR": str(tmp_path / "cache"), **hub.env()}
        ref, model_env = model_ref(model)
        log = tmp_path / "server.log"
        with running(ref, env={**model_env, **env}, log_path=log) as url:

            def image(**extra) -> str:
                inputs = {"prompt": "a red circle", "seed": 3, "output_format": "png"}
                status, body = predict(url, {**inputs, **INPUTS[model], **extra})
                assert status == 200 and body["status"] == "succeeded", (body, log.read_text())
                return body["output"][0]

            before = image()
            kohya, diffusers = (image(lora_weights=urls[k]) for k in ("kohya", "diffusers"))
            assert kohya != before and diffusers != before
            assert image(lora_weights=urls["kohya"], lora_scale=0) == before
            both = image(lora_weights=urls["diffusers"], extra_lora=urls["kohya"])
            assert both not in (before, kohya, diffusers)
            assert image() == before  # byte for byte, after LoRA requests

            # A LoRA that cannot be fetched fails that prediction only, with the fix named.
            missing = hub.add_status("gone.safetensors", 404)
            secret = {"hf_api_token": "hf_never_logged"}
            status, body = predict(
                url, {"prompt": "x", "lora_weights": missing, **secret, **INPUTS[model]}
            )
            assert body["status"] == "failed" and "lora_weights: HTTP 404" in body["error"]
            assert "hf_never_logged" not in body["logs"] + log.read_text()
            assert_still_serving(url)
            assert image(lora_weights=urls["diffusers"]) == diffusers

"""LoRAs on the tiny models: every layout changes the image, scales follow one rule, two
LoRAs keep their own scales, and switching never leaks into later requests."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from models.errors import InputError
from models.flux.plan import FluxInputs
from models.sdxl.plan import SDXLInputs
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tools.fixtures.hub import Hub
from tools.fixtures.loras import flux_lora, sdxl_lora

# A small input image at strength 1 draws from noise at its size (128x128): cheaper than
# the smallest text-to-image size, and the same transformer and LoRA layers run.
FLUX = dict(
    prompt="a red circle", prompt_strength=1.0, num_inference_steps=1, seed=7, output_format="png"
)
SDXL = dict(
    prompt="a red circle", width=256, height=256, num_inference_steps=3, seed=7, output_format="png"
)


def pixels(paths) -> np.ndarray:
    return np.asarray(Image.open(paths[0]), dtype=np.int16)


@pytest.fixture(scope="module")
def hub():
    with Hub() as hub:
        yield hub


@pytest.fixture(scope="module", autouse=True)
def small_image(tmp_path_factory):
    path = tmp_path_factory.mktemp("image") / "in.png"
    Image.new("RGB", (128, 128), (40, 90, 160)).save(path)
    FLUX["image"] = path


@pytest.fixture(scope="module")
def flux(settings, tmp_path_factory, hub):
    cache = tmp_path_factory.mktemp("lora-cache")
    custom = replace(settings, safety_checker=False, lora_cache_dir=cache, lora_max_loaded=3)
    return DiffusionModel(get_spec("tiny-flux-dev"), replace(custom, **hub.endpoints()))


@pytest.fixture(scope="module")
def flux_files(flux, tmp_path_factory):
    """One LoRA per layout, plus two more diffusers ones, as local files."""
    folder, pipe = tmp_path_factory.mktemp("flux-loras"), flux.engine.pipes["txt2img"]
    files = {
        layout: flux_lora(
            pipe,
            folder / f"{layout}.safetensors",
            layout=layout,
            seed=i,
            text_encoder=layout in ("diffusers", "kohya"),
        )
        for i, layout in enumerate(("diffusers", "kohya", "comfyui", "xlabs"))
    }
    for name, seed in (("a", 10), ("b", 11), ("c", 12)):
        files[name] = flux_lora(pipe, folder / f"{name}.safetensors", seed=seed)
    return files


@pytest.fixture(scope="module")
def flux_base(flux):
    return pixels(flux.predict(FluxInputs(**FLUX)))


def run(model, **kw) -> np.ndarray:
    inputs = (FluxInputs if model.spec.family == "flux" else SDXLInputs)(
        **{**(FLUX if model.spec.family == "flux" else SDXL), **kw}
    )
    return pixels(model.predict(inputs))


@pytest.mark.parametrize("layout", ["diffusers", "kohya", "comfyui", "xlabs"])
def test_every_flux_layout_changes_the_image(flux, flux_files, flux_base, layout, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        changed = run(flux, lora_weights=str(flux_files[layout]))
    assert np.abs(changed - flux_base).mean() > 1.0
    assert "lora_weights: loaded in" in caplog.text
    text_encoder = "transformer+text_encoder" in caplog.text
    assert text_encoder == (layout in ("diffusers", "kohya"))
    assert np.array_equal(run(flux), flux_base)  # and nothing stays behind


def test_scale_zero_is_no_lora_and_other_scales_differ(flux, flux_files, flux_base):
    lora = str(flux_files["a"])
    assert np.array_equal(run(flux, lora_weights=lora, lora_scale=0), flux_base)
    one, two, minus = (run(flux, lora_weights=lora, lora_scale=s) for s in (1, 2, -1))
    assert not np.array_equal(one, two)
    assert np.abs(minus - flux_base).mean() > 1.0 and not np.array_equal(minus, one)
    # Scales are set, not accumulated: 1 again after 2 and -1 is what 1 was.
    assert np.array_equal(run(flux, lora_weights=lora, lora_scale=1), one)


def test_two_loras_each_keep_their_own_scale(flux, flux_files):
    a, b = str(flux_files["a"]), str(flux_files["b"])
    only_a = run(flux, lora_weights=a, lora_scale=0.7)
    only_b = run(flux, lora_weights=b, lora_scale=1.5)
    assert np.array_equal(
        run(flux, lora_weights=a, lora_scale=0.7, extra_lora=b, extra_lora_scale=0), only_a
    )
    assert np.array_equal(
        run(flux, lora_weights=a, lora_scale=0, extra_lora=b, extra_lora_scale=1.5), only_b
    )
    both = run(flux, lora_weights=a, lora_scale=0.7, extra_lora=b, extra_lora_scale=1.5)
    assert not np.array_equal(both, only_a) and not np.array_equal(both, only_b)


def test_fifty_swaps_in_any_order_leave_no_trace(flux, flux_files, flux_base):
    a, b, c = (str(flux_files[k]) for k in "abc")
    requests = [
        {},
        {"lora_weights": a},
        {"lora_weights": b, "lora_scale": 2},
        {"lora_weights": a, "extra_lora": c, "extra_lora_scale": -0.5},
        {"lora_weights": c},
        {"extra_lora": b},
    ]
    first = {i: run(flux, **r) for i, r in enumerate(requests)}
    rng = random.Random(0)
    for _ in range(50):
        i = rng.randrange(len(requests))
        assert np.array_equal(run(flux, **requests[i]), first[i]), requests[i]
    assert np.array_equal(run(flux), flux_base)


def test_a_loaded_lora_is_not_fetched_or_loaded_again(flux, flux_files, hub, caplog):
    url = hub.add_file("again/lora.safetensors", flux_files["b"].read_bytes())
    run(flux, lora_weights=url)
    fetched = hub.count("again/lora.safetensors")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        run(flux, lora_weights=url)
    assert hub.count("again/lora.safetensors") == fetched
    assert "is already loaded" in caplog.text and "lora_weights: loaded in" not in caplog.text


def test_least_recently_used_adapter_is_unloaded_past_the_limit(flux, flux_files, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        for name in ("a", "b", "c", "diffusers", "a"):
            run(flux, lora_weights=str(flux_files[name]))
    adapters = flux.engine.pipes["txt2img"].get_list_adapters()["transformer"]
    assert len(adapters) == 3 and "least recently used" in caplog.text


def test_trigger_word_from_metadata_is_logged_when_the_prompt_lacks_it(flux, tmp_path, caplog):
    pipe = flux.engine.pipes["txt2img"]
    lora = flux_lora(pipe, tmp_path / "t.safetensors", seed=5, metadata={"trigger_word": "ZIKI"})
    with caplog.at_level(logging.INFO, logger="models"):
        run(flux, lora_weights=str(lora))
    assert "trigger word 'ZIKI'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        run(flux, lora_weights=str(lora), prompt="a ZIKI circle")
    assert "trigger word" not in caplog.text


def test_the_same_lora_twice_is_applied_once_at_the_summed_scale(flux, flux_files, caplog):
    a = str(flux_files["a"])
    with caplog.at_level(logging.INFO, logger="models"):
        twice = run(flux, lora_weights=a, lora_scale=0.5, extra_lora=a, extra_lora_scale=1)
    assert np.array_equal(twice, run(flux, lora_weights=a, lora_scale=1.5))
    assert "applying it once" in caplog.text


def test_a_partial_lora_logs_the_layers_it_skips(flux, flux_files, tmp_path, caplog):
    tensors = load_file(flux_files["c"])
    # Layers of a deeper model than this one: block 7 does not exist here.
    tensors["transformer.transformer_blocks.7.attn.to_q.lora_A.weight"] = torch.ones(4, 32)
    tensors["transformer.transformer_blocks.7.attn.to_q.lora_B.weight"] = torch.ones(32, 4)
    save_file(tensors, tmp_path / "partial.safetensors")
    with caplog.at_level(logging.INFO, logger="models"):
        run(flux, lora_weights=str(tmp_path / "partial.safetensors"))
    assert "1 layers it names are not in this model" in caplog.text


def refused(model, tmp_path, **inputs) -> str:
    with pytest.raises(InputError) as err:
        run(model, **inputs)
    return str(err.value)


def test_loras_of_the_other_family_and_non_loras_are_refused(flux, flux_base, tmp_path):
    sdxl_like = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(
            4, 8
        )
    }
    save_file(sdxl_like, tmp_path / "sdxl.safetensors")
    message = refused(flux, tmp_path, lora_weights=str(tmp_path / "sdxl.safetensors"))
    assert "a LoRA for SDXL" in message and "this model is FLUX.1" in message
    save_file({"emb_params": torch.ones(2, 768)}, tmp_path / "embedding.safetensors")
    message = refused(flux, tmp_path, lora_weights=str(tmp_path / "embedding.safetensors"))
    assert message.startswith("lora_weights:") and "FLUX.1" in message and "SDXL" in message
    assert np.array_equal(run(flux), flux_base)  # a refusal leaves the model as it was


def test_a_lora_with_other_layer_sizes_is_refused_before_loading(flux, flux_files, tmp_path):
    tensors = load_file(flux_files["a"])
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key] = torch.ones(4, 3072)  # FLUX.1's width, not the tiny model's
    save_file(tensors, tmp_path / "wide.safetensors")
    message = refused(flux, tmp_path, extra_lora=str(tmp_path / "wide.safetensors"))
    assert message.startswith("extra_lora:") and "other layer sizes" in message
    assert not any("wide" in str(v) for v in flux.engine.adapters.loaded)


def test_scales_out_of_range_are_refused_before_any_work(flux, hub):
    with pytest.raises(InputError, match="lora_scale=3.5 is out of range"):
        run(flux, lora_weights="owner/model", lora_scale=3.5)
    with pytest.raises(InputError, match="extra_lora_scale"):
        run(flux, extra_lora="owner/model", extra_lora_scale=-2)
    assert hub.count("owner/model") == 0


@pytest.fixture(scope="module")
def sdxl(settings, tmp_path_factory):
    cache = tmp_path_factory.mktemp("sdxl-lora-cache")
    return DiffusionModel(
        get_spec("tiny-sdxl"), replace(settings, safety_checker=False, lora_cache_dir=cache)
    )


def test_sdxl_kohya_and_diffusers_layouts_of_one_lora_draw_the_same(sdxl, tmp_path):
    pipe, base = sdxl.engine.pipes["txt2img"], run(sdxl)
    made = {
        layout: sdxl_lora(
            pipe, tmp_path / f"{layout}.safetensors", layout=layout, text_encoder=True, seed=3
        )
        for layout in ("diffusers", "kohya")
    }
    diffusers, kohya = (run(sdxl, lora_weights=str(made[k])) for k in ("diffusers", "kohya"))
    assert np.abs(diffusers - base).mean() > 1.0
    assert np.array_equal(diffusers, kohya)  # same weights, two key layouts
    assert np.array_equal(run(sdxl, lora_weights=str(made["kohya"]), lora_scale=0), base)
    refined = run(
        sdxl, lora_weights=str(made["diffusers"]), refine="base_image_refiner", refine_steps=4
    )
    assert refined.shape == base.shape
    assert np.array_equal(run(sdxl), base)


def test_sdxl_refuses_a_flux_lora(sdxl, flux_files, tmp_path):
    message = refused(sdxl, tmp_path, lora_weights=str(flux_files["kohya"]))
    assert "a LoRA for FLUX.1" in message and "this model is SDXL" in message

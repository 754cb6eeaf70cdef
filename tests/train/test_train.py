"""Training on the tiny models, in this process: loss, outputs, the predictors loading
the result, resume, the kohya copy, and the Cog inputs agreeing with models/train."""

from __future__ import annotations

import inspect
import json
import logging
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import train as train_py
from models.errors import InputError
from models.serving.model import DiffusionModel
from models.specs import get_spec
from models.train import kohya
from models.train.config import TrainInputs, input_defaults, plan
from tests.train.helpers import dataset, quick_run

pytestmark = pytest.mark.slow  # trains a model: script/test -m 'not slow' skips it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("data") / "data.zip")


@pytest.fixture(scope="module")
def flux_run(settings, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("flux") / "lora"
    result, tar = quick_run(settings, "tiny-flux-dev", data, out, autocaption=True)
    return result, tar, out


def test_loss_goes_down_on_a_fixed_batch(flux_run):
    result, _, _ = flux_run
    assert result.steps_done == 6
    assert result.fixed_loss_after < result.fixed_loss_before


def test_tar_holds_the_lora_with_metadata_kohya_copy_config_captions_and_samples(flux_run):
    _, tar, out = flux_run
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    for name in ("lora.safetensors", "lora_kohya.safetensors", "config.json",
                 "captions/red.txt", "captions/plain/green.txt", "samples/0.webp"):  # fmt: skip
        assert name in names, name
    assert not any(n.startswith(("checkpoints", "work")) for n in names)
    with safe_open(str(out / "lora.safetensors"), framework="pt") as f:
        metadata, keys = f.metadata(), list(f.keys())
    assert metadata["trigger_word"] == "ZIKI" and metadata["base_model"] == "tiny-flux-dev"
    assert json.loads(metadata["training_config"])["steps"] == 6
    assert all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    captions = {p.name: p.read_text().strip() for p in (out / "captions").rglob("*.txt")}
    assert captions["red.txt"] == "ZIKI, a red circle"
    assert captions["blue.txt"] == "ZIKI a blue circle"  # already had the trigger word
    # autocaption: the tiny BLIP captioned green.jpg (noise words), the trigger in front.
    assert captions["green.txt"].startswith("ZIKI, ") and len(captions["green.txt"]) > 6
    assert set(captions) == {"red.txt", "blue.txt", "green.txt", "cutout.txt"}
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny-flux-dev" and config["resolutions"] == [64]


def _predict(model, **inputs):
    defaults = dict(prompt="a red circle", num_inference_steps=2, seed=3, output_format="png")
    if model.spec.family == "flux":
        defaults["megapixels"] = "0.25"
    paths = model.predict(model.inputs(**{**defaults, **inputs}))
    return np.asarray(Image.open(paths[0]), dtype=np.float32)


@pytest.fixture(scope="module")
def flux_model(settings):
    spec = get_spec("tiny-flux-dev")
    return DiffusionModel(spec, replace(settings, safety_checker=False))


def test_the_tar_loads_in_the_predictor_changes_its_output_and_names_the_trigger(
    flux_model, flux_run, caplog
):
    _, tar, _ = flux_run
    base = _predict(flux_model)
    with caplog.at_level(logging.INFO, logger="models"):
        tuned = _predict(flux_model, lora_weights=str(tar))
    assert np.abs(tuned - base).mean() > 0.5
    assert "loaded in" in caplog.text
    assert "trigger word 'ZIKI'" in caplog.text  # the prompt lacks it


def test_resume_continues_exactly_where_the_checkpoint_left_off(settings, data, flux_run, tmp_path):
    _, _, out = flux_run
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-000003"]  # none at the last step
    resumed, _ = quick_run(settings, "tiny-flux-dev", data, tmp_path / "again", autocaption=True,
                           resume=checkpoints[0])  # fmt: skip
    assert resumed.steps_done == 3
    first, second = load_file(out / "lora.safetensors"), load_file(resumed.lora)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=1e-6)


def test_resume_refuses_other_settings(settings, data, flux_run, tmp_path):
    _, _, out = flux_run
    with pytest.raises(InputError, match="lora_rank"):
        quick_run(settings, "tiny-flux-dev", data, tmp_path / "x", lora_rank=8, resume=out)


def test_sdxl_trains_and_its_kohya_copy_has_the_same_effect(settings, data, tmp_path):
    result, tar = quick_run(settings, "tiny-sdxl", data, tmp_path / "sdxl", steps=3,
                            checkpoint_every=0, samples=0)  # fmt: skip
    model = DiffusionModel(get_spec("tiny-sdxl"), replace(settings, safety_checker=False))

    def predict(**kw):
        return _predict(
            model, prompt="a circle", width=256, height=256, num_inference_steps=3, **kw
        )

    base, tuned = predict(), predict(lora_weights=str(tar))
    kohya_copy = predict(lora_weights=str(result.out_dir / "lora_kohya.safetensors"))
    assert np.abs(tuned - base).mean() > 0.5
    assert np.abs(kohya_copy - tuned).max() <= 1.0  # the same update, re-keyed


def _real_width_flux_lora(rank=4) -> dict:
    """A diffusers-layout LoRA for FLUX.1's real widths (3072, MLP 12288), one block of
    each kind: diffusers' kohya loader hard-codes these widths for single blocks."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"attn.to_q": (3072, 3072), "attn.to_k": (3072, 3072), "attn.to_v": (3072, 3072),
              "attn.to_out.0": (3072, 3072), "attn.add_q_proj": (3072, 3072),
              "attn.add_k_proj": (3072, 3072), "attn.add_v_proj": (3072, 3072),
              "attn.to_add_out": (3072, 3072), "ff.net.0.proj": (3072, 12288),
              "ff.net.2": (12288, 3072), "ff_context.net.0.proj": (3072, 12288),
              "ff_context.net.2": (12288, 3072)}  # fmt: skip
    single = {"attn.to_q": (3072, 3072), "attn.to_k": (3072, 3072), "attn.to_v": (3072, 3072),
              "proj_mlp": (3072, 12288), "proj_out": (15360, 3072)}  # fmt: skip
    state = {}
    for block, table in (("transformer_blocks.0", shapes), ("single_transformer_blocks.0", single)):
        for module, (fan_in, fan_out) in table.items():
            key = f"transformer.{block}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) / 50
            state[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) / 50
    return state


def _deltas(state: dict, scale: float = 1.0) -> dict:
    return {k.removesuffix(".lora_A.weight"): scale * state[k.replace("lora_A", "lora_B")] @ v
            for k, v in state.items() if k.endswith("lora_A.weight")}  # fmt: skip


def test_flux_kohya_copy_is_read_back_by_diffusers_kohya_loader_with_the_same_update(tmp_path):
    from diffusers import FluxPipeline

    ours = _real_width_flux_lora()
    copy = kohya.flux_to_kohya(ours, scale=1.0)
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in copy
    assert copy["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (21504, 16)
    save_file(copy, str(tmp_path / "kohya.safetensors"))
    # diffusers detects the kohya layout, splits the fused modules and consumes every key.
    back = FluxPipeline.lora_state_dict(str(tmp_path / "kohya.safetensors"))
    expected, got = _deltas(ours), _deltas(back)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-7)


def test_cog_inputs_match_the_trainer_defaults_and_are_documented():
    from tools.schema import openapi_schema

    signature = inspect.signature(train_py.train)
    defaults = input_defaults()
    for name, param in signature.parameters.items():
        if name != "input_images":
            assert param.default.default == defaults[name], name
    properties = openapi_schema(train_py.train, mode="train")["components"]["schemas"][
        "TrainingInput"
    ]["properties"]
    assert set(properties) <= set(defaults) | {"input_images"}
    for name, prop in properties.items():
        assert len(prop.get("description", "")) > 20, name


@pytest.mark.parametrize(
    "inputs, word",
    [({"steps": 0}, "steps"), ({"lora_rank": 0}, "lora_rank"), ({"optimizer": "sgd"}, "optimizer"),
     ({"caption_dropout_rate": 2}, "caption_dropout_rate"), ({"resolution": "big"}, "resolution"),
     ({"learning_rate": 5.0}, "learning_rate")],
)  # fmt: skip
def test_plan_refuses_bad_values_naming_the_input(tmp_path, inputs, word):
    with pytest.raises(InputError, match=word):
        plan(get_spec("tiny-sdxl"), TrainInputs(input_images=tmp_path, **inputs))


def test_learning_rate_defaults_per_family(tmp_path):
    values = {get_spec(m).family: plan(get_spec(m), TrainInputs(tmp_path)).learning_rate
              for m in ("tiny-flux-dev", "tiny-sdxl")}  # fmt: skip
    assert values == {"flux": 4e-4, "sdxl": 1e-4}


def test_gradient_checkpointing_and_uncached_latents_train_the_same_lora(settings, data, tmp_path):
    quick = dict(steps=2, checkpoint_every=0, samples=0)
    plain, _ = quick_run(settings, "tiny-flux-schnell", data, tmp_path / "a", **quick)
    other, _ = quick_run(settings, "tiny-flux-schnell", data, tmp_path / "b", **quick,
                         gradient_checkpointing=True, cache_latents=False)  # fmt: skip
    first, second = load_file(plain.lora), load_file(other.lora)
    assert max(v.abs().max() for k, v in first.items() if "lora_B" in k) > 1e-3
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=1e-5)

"""The step cache (models/engine/caching.py, diffusers' TaylorSeer) on tiny FLUX models:
which steps are computed, what it changes in the picture, that it is off again after a
request, where it is on by default (Kontext's go_fast) and where it is refused."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from models.errors import InputError
from models.flux.kontext import KontextInputs
from models.flux.plan import FluxInputs, plan
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import write_image


@pytest.fixture(scope="module")
def dev(settings):
    return DiffusionModel(get_spec("tiny-flux-dev"), replace(settings, safety_checker=False))


def draw(model, caplog, size=128, **inputs) -> tuple[np.ndarray, str]:
    """The request's picture, drawn at size x size (the cache does not depend on it)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        job = model.plan(model.spec, FluxInputs(prompt="a cat", seed=2, **inputs))
        if job.image is None:
            job = replace(job, width=size, height=size)
        (picture,) = model.engine.generate(job)
    return np.asarray(picture, dtype=np.int16), caplog.text


def test_the_cache_computes_11_of_28_steps_and_stays_close(dev, caplog):
    plain, log_plain = draw(dev, caplog)
    cached, log_cached = draw(dev, caplog, step_cache=True)
    assert "Step cache off: the transformer computed 28 of 28 steps" in log_plain
    assert "Step cache on: the transformer computed 11 of 28 steps" in log_cached
    difference = np.abs(cached - plain)
    assert 0 < difference.mean() < 2  # close to, not the same as, the uncached picture
    again, _ = draw(dev, caplog, step_cache=True)
    assert np.array_equal(cached, again)  # a seed repeats with the cache too
    after, _ = draw(dev, caplog)
    assert np.array_equal(after, plain)  # off again, its state gone, after a cached request


@pytest.mark.parametrize("steps, computed", [(4, 3), (10, 5), (50, 19)])
def test_first_two_then_one_in_three_and_the_last(dev, caplog, steps, computed):
    _, text = draw(dev, caplog, step_cache=True, num_inference_steps=steps)
    assert f"computed {computed} of {steps} steps" in text


def test_img2img_counts_the_steps_it_runs(dev, caplog, tmp_path):
    image = write_image(tmp_path / "in.png", size=(128, 128))
    _, text = draw(dev, caplog, step_cache=True, image=image, prompt_strength=0.5)
    assert "computed 7 of 14 steps" in text  # 0, 1, 3, 6, 9, 12 and the last


def test_kontexts_go_fast_includes_the_cache(settings, caplog, tmp_path):
    spec = get_spec("tiny-flux-kontext-dev")
    model = DiffusionModel(spec, replace(settings, safety_checker=False))
    picture = write_image(tmp_path / "in.png", size=(128, 128))
    request = dict(prompt="make it red", input_image=picture, num_inference_steps=10, seed=1)
    for go_fast, step_cache, expected in [
        (True, False, "Step cache on: the transformer computed 5 of 10"),
        (False, False, "Step cache off: the transformer computed 10 of 10"),
        (False, True, "Step cache on: the transformer computed 5 of 10"),
    ]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="models"):
            job = model.plan(spec, KontextInputs(**request, go_fast=go_fast, step_cache=step_cache))
            model.engine.generate(replace(job, width=128, height=128))
        assert expected in caplog.text


def test_models_without_a_step_cache_refuse_it_naming_the_input():
    spec = get_spec("tiny-flux-schnell")
    with pytest.raises(InputError, match="step_cache: tiny-flux-schnell has no step cache"):
        plan(spec, FluxInputs(prompt="x", step_cache=True))


def test_a_lora_on_the_output_layer_is_cached_with_it(settings, tmp_path):
    """A LoRA loaded after setup wraps proj_out (PEFT): the cache follows it to the layer
    the model calls, so a skipped step's output is extrapolated LoRA included. The same
    LoRA fused into the weights (no wrapper) must draw the same."""
    import torch
    from diffusers import FluxPipeline
    from safetensors.torch import load_file, save_file

    from models.engine.caching import StepCache
    from models.weights.resolver import resolve
    from tools.fixtures.loras import flux_lora

    pipe = FluxPipeline.from_pretrained(resolve("tiny-flux-dev", settings))
    pipe.set_progress_bar_config(disable=True)
    cache = StepCache(pipe.transformer, permanent=True)
    path = flux_lora(pipe, tmp_path / "l.safetensors", rank=4, strength=4.0)
    tensors = load_file(path)
    out = pipe.transformer.proj_out
    generator = torch.Generator().manual_seed(0)
    tensors["transformer.proj_out.lora_A.weight"] = torch.randn(
        4, out.in_features, generator=generator
    )
    tensors["transformer.proj_out.lora_B.weight"] = torch.randn(
        out.out_features, 4, generator=generator
    )
    save_file(tensors, path)

    def draw():
        with cache.active(True, 7), torch.inference_mode():
            return pipe("x", num_inference_steps=7, width=64, height=64, output_type="np",
                        generator=torch.Generator().manual_seed(1)).images[0]  # fmt: skip

    pipe.load_lora_weights(str(path))
    wrapped = draw()
    assert cache.computed == 4 and pipe.transformer.proj_out is cache.output  # 0, 1, 3, 6
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    fused = draw()
    assert type(pipe.transformer.proj_out) is torch.nn.Linear and cache.computed == 4
    assert np.abs(wrapped - fused).max() < 1e-3


def test_a_second_engine_on_the_same_components_has_its_own_cache(settings, tmp_path, caplog):
    """As script/bench --full-size builds one model and serves it in several setups: the
    second engine's go_fast copy (fp8 here) is made of the bare model, and both caches
    count their own steps."""
    from models.serving.families import FAMILIES
    from tests.conftest import fast_settings

    spec = get_spec("tiny-flux-dev")
    quick = fast_settings(settings, tmp_path, fp8="on")
    components = FAMILIES[spec.interface].load_components(spec, quick, "cpu")
    first = DiffusionModel(spec, quick, components=components)
    second = DiffusionModel(spec, quick, components=components)
    for model in (first, second):
        fast, text = draw(model, caplog, step_cache=True, num_inference_steps=7, go_fast=True)
        assert "computed 4 of 7 steps" in text and "go_fast: not compiled, fp8" in text
        eager, _ = draw(model, caplog, step_cache=True, num_inference_steps=7, go_fast=False)
        assert np.abs(fast - eager).mean() < 3  # fp8 weights, the same model

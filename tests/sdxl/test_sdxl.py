"""SDXL through the plain model API on tiny-sdxl: modes, refiners, schedulers, sizes,
weights overrides and errors. Only what differs from FLUX (tests/flux/test_flux.py)."""

from __future__ import annotations

import logging
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.loras.source import Tokens
from models.sdxl.plan import (
    HIGH_NOISE_FRAC,
    MAX_SIDE,
    MIN_SIDE,
    REFINE_MODES,
    SDXLInputs,
    plan,
)
from models.sdxl.schedulers import SCHEDULERS, make_scheduler
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import assert_plan_rejects, write_image

SMALL = dict(width=256, height=256, num_inference_steps=4)
FEW = dict(num_inference_steps=4, seed=5)


@pytest.fixture(scope="module")
def sdxl(settings):
    return DiffusionModel(get_spec("tiny-sdxl"), replace(settings, safety_checker=False))


@pytest.fixture
def gradient(tmp_path) -> Path:
    # Smooth and colourful, so that "close to the input" is not trivially true.
    y, x = np.mgrid[0:256, 0:320]
    pixels = np.stack([x * 255 // 320, y, 255 - (x + y) // 3], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "gradient.png")
    return tmp_path / "gradient.png"


def half_mask(tmp_path, size=(320, 256)) -> Path:
    """Left half black (keep), right half white (repaint)."""
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, *size))
    mask.save(tmp_path / "mask.png")
    return tmp_path / "mask.png"


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def sizes(paths) -> list[tuple[int, int]]:
    return [Image.open(p).size for p in paths]


@pytest.mark.parametrize("refine", REFINE_MODES)
@pytest.mark.parametrize("mode", ["txt2img", "img2img", "inpaint"])
def test_every_mode_with_every_refiner(sdxl, tmp_path, gradient, caplog, mode, refine):
    images = dict(image=gradient) if mode != "txt2img" else {}
    if mode == "inpaint":
        images["mask"] = half_mask(tmp_path)
    with caplog.at_level(logging.INFO, logger="models"):
        paths = sdxl.predict(
            SDXLInputs(prompt="a cat", num_outputs=2, refine=refine, seed=1, **SMALL, **images)
        )
    expected = (256, 256) if mode == "txt2img" else (320, 256)
    assert sizes(paths) == [expected, expected]
    assert f"Mode: {mode}, {expected[0]}x{expected[1]}, 4 steps, K_EULER, {refine}" in caplog.text
    assert ("Refining with" in caplog.text) == (refine != "no_refiner")


def test_defaults_follow_the_spec(sdxl):
    job = plan(sdxl.spec, SDXLInputs(prompt="x"))
    assert (job.width, job.height, job.steps, job.guidance) == (1024, 1024, 30, 7.5)
    assert (job.scheduler, job.refine, job.negative_prompt) == ("K_EULER", "no_refiner", None)


def test_sizes_are_rounded_to_8_with_a_log_line(sdxl, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(sdxl.spec, SDXLInputs(prompt="x", width=1000, height=1000))
        assert (job.width, job.height) == (1000, 1000) and "rounded" not in caplog.text
        job = plan(sdxl.spec, SDXLInputs(prompt="x", width=1001, height=1000))
    assert (job.width, job.height) == (1000, 1000)
    assert "Size 1001x1000 rounded to 1000x1000 (multiple of 8)" in caplog.text
    path = sdxl.predict(SDXLInputs(prompt="x", width=300, height=261, num_inference_steps=1))[0]
    assert Image.open(path).size == (304, 264)


def test_an_image_sets_the_size_and_width_height_are_ignored(sdxl, tmp_path, caplog):
    source = write_image(tmp_path / "in.png", size=(2500, 1000))
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(sdxl.spec, SDXLInputs(prompt="x", image=source, width=512, height=512))
    assert (job.width, job.height) == (2048, 816)  # fits 2048x2048, multiple of 8
    assert "width and height are ignored" in caplog.text


def test_scheduler_of_one_request_does_not_stick(sdxl):
    base = sdxl.engine.pipes["txt2img"]
    original, config = base.scheduler, dict(base.scheduler.config)
    inputs = SDXLInputs(prompt="a fox", seed=7, output_format="png", **SMALL)
    before = pixels(sdxl.predict(inputs)[0])
    ddim = pixels(sdxl.predict(replace(inputs, scheduler="DDIM"))[0])
    assert base.scheduler is original and dict(base.scheduler.config) == config
    assert all(pipe.scheduler is original for pipe in sdxl.engine.pipes.values())
    assert np.array_equal(pixels(sdxl.predict(inputs)[0]), before)
    assert np.abs(ddim - before).max() > 0  # DDIM was really used for that one request


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs(sdxl, name):
    paths = sdxl.predict(SDXLInputs(prompt="x", scheduler=name, seed=1, **SMALL))
    assert sizes(paths) == [(256, 256)]


def test_karras_dpm_is_dpm_with_karras_sigmas(sdxl):
    config = sdxl.engine.pipes["txt2img"].scheduler.config
    built = {n: make_scheduler(SCHEDULERS[n], config) for n in ("KarrasDPM", "DPMSolverMultistep")}
    assert type(built["KarrasDPM"]) is type(built["DPMSolverMultistep"])
    assert built["KarrasDPM"].config.use_karras_sigmas is True
    assert built["DPMSolverMultistep"].config.use_karras_sigmas is False


def test_same_seed_same_images_through_the_refiner(sdxl):
    inputs = SDXLInputs(
        prompt="a red fox", seed=42, refine="expert_ensemble_refiner", output_format="png", **SMALL
    )
    # Read each file at once: the next request removes the previous one's folder.
    a, b = pixels(sdxl.predict(inputs)[0]), pixels(sdxl.predict(inputs)[0])
    c = pixels(sdxl.predict(replace(inputs, seed=43))[0])
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0


def vae_round_trip(sdxl, image: Image.Image) -> np.ndarray:
    """What the input looks like after the (random) VAE: the best any mode can keep."""
    pipe = sdxl.engine.pipes["img2img"]
    with torch.inference_mode():
        latents = pipe.vae.encode(pipe.image_processor.preprocess(image)).latent_dist.mode()
        decoded = pipe.image_processor.postprocess(pipe.vae.decode(latents).sample)[0]
    return np.asarray(decoded, dtype=np.float32)


def test_img2img_with_tiny_strength_stays_close_to_the_input(sdxl, gradient, caplog):
    # 0.05 x 30 steps = one denoising step from barely-noised latents. The tiny VAE is
    # random, so the reference is the input's VAE round trip, not the input. Measured
    # (seeds 1-4): ~2.6 levels of 255 from it, against ~38-41 for a txt2img image, so a
    # quarter of the txt2img distance fails only if img2img really lost the image.
    baseline = vae_round_trip(sdxl, Image.open(gradient))
    png = dict(seed=3, output_format="png")
    with caplog.at_level(logging.INFO, logger="models"):
        low = sdxl.predict(SDXLInputs(prompt="a cat", image=gradient, prompt_strength=0.05, **png))
    assert "Step 1/1" in caplog.text
    low = pixels(low[0])  # now: the next request removes this one's folder
    text = sdxl.predict(SDXLInputs(prompt="a cat", **{**SMALL, "width": 320}, **png))
    near, far = (np.abs(p - baseline).mean() for p in (low, pixels(text[0])))
    assert near < 0.25 * far, (near, far)


def inpaint_latents(sdxl, inputs: SDXLInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The inpainting result (refined if asked) and the input image, both as latents."""
    job, engine = plan(sdxl.spec, inputs), sdxl.engine
    generator = torch.Generator().manual_seed(job.seed)
    with torch.inference_mode(), engine.request(job, Tokens()) as stages:
        pipe = stages[0]
        result = pipe(**{**engine.call_args(job, generator), "output_type": "latent"}).images
        if job.refine != "no_refiner":
            kwargs = engine.call_args(job, generator, stage=1, previous=result)
            result = stages[1](**kwargs, output_type="latent").images
        pixels_in = pipe.image_processor.preprocess(job.image)
        clean = pipe.vae.encode(pixels_in).latent_dist.mode() * pipe.vae.config.scaling_factor
    return result, clean


@pytest.mark.parametrize("refine", REFINE_MODES)
def test_inpainting_keeps_the_black_area_in_latent_space(sdxl, tmp_path, gradient, refine):
    # diffusers does not paste input pixels back: the kept area is kept in latent space,
    # and the VAE decoder (GroupNorm statistics over the whole image) then mixes some of
    # the repainted half into it. With this random VAE that is ~14 levels of 255, so the
    # check is exact in latents here, and in pixels with an all-black mask below.
    mask = half_mask(tmp_path)
    result, clean = inpaint_latents(
        sdxl, SDXLInputs(prompt="a cat", image=gradient, mask=mask, refine=refine, **FEW)
    )
    keep, repaint = slice(0, 20), slice(20, 40)  # latent columns (320 px / 8)
    assert torch.allclose(result[..., keep], clean[..., keep], atol=1e-2)
    assert (result[..., repaint] - clean[..., repaint]).abs().mean() > 0.5


def test_all_black_mask_returns_the_input(sdxl, tmp_path, gradient):
    black = tmp_path / "black.png"
    Image.new("L", (320, 256), 0).save(black)
    inputs = SDXLInputs(prompt="a cat", image=gradient, mask=black, output_format="png", **FEW)
    kept = sdxl.predict(inputs)[0]
    baseline = vae_round_trip(sdxl, Image.open(gradient))
    assert np.abs(pixels(kept) - baseline).mean() < 1.0  # measured: 0.01


def test_refine_steps_drive_base_image_refiner_only(sdxl, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        sdxl.predict(
            SDXLInputs(prompt="x", refine="base_image_refiner", refine_steps=10, seed=1, **SMALL)
        )
    refiner_log = caplog.text.split("Refining with base_image_refiner")[1]
    assert "Step 3/3" in refiner_log and "Step 4/" not in refiner_log  # 0.3 x 10 steps
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(
            sdxl.spec, SDXLInputs(prompt="x", refine="expert_ensemble_refiner", refine_steps=9)
        )
    assert job.refine_steps is None and "refine_steps is ignored" in caplog.text
    assert plan(sdxl.spec, SDXLInputs(prompt="x", refine="base_image_refiner")).refine_steps == 30


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(mask="mask.png"), ["mask", "image"]),
        (dict(image="in.png", prompt_strength=0.01), ["prompt_strength", "num_inference_steps"]),
        (dict(scheduler="K_LMS"), ["scheduler", "K_EULER"]),
        (dict(refine="both"), ["refine", "expert_ensemble_refiner"]),
        (dict(width=255), ["width", "256", "2048"]),
        (dict(height=2100), ["height"]),
        (dict(guidance_scale=21), ["guidance_scale"]),
        (dict(num_inference_steps=101), ["num_inference_steps"]),
        (dict(refine="expert_ensemble_refiner", high_noise_frac=1.0), ["high_noise_frac"]),
        (dict(high_noise_frac=0.0), ["high_noise_frac", "0.01", "0.99"]),
        (dict(refine="base_image_refiner", refine_steps=3), ["refine_steps"]),
        (dict(refine_steps=101), ["refine_steps"]),
    ],
)
def test_bad_inputs_name_the_input(sdxl, tmp_path, inputs, words):
    assert_plan_rejects(sdxl, tmp_path, inputs, words)


def test_predictor_schema_agrees_with_the_model():
    import predict
    from tools.schema import openapi_schema

    schema = openapi_schema(predict.SDXLPredictor)["components"]["schemas"]
    props, spec = schema["Input"]["properties"], get_spec("sdxl")
    assert set(props) == {f.name for f in fields(SDXLInputs)}
    assert schema["scheduler"]["enum"] == list(SCHEDULERS)
    assert schema["refine"]["enum"] == list(REFINE_MODES)
    assert props["scheduler"]["default"] == spec.scheduler  # steps, guidance: test_cog_config
    for side in ("width", "height"):
        assert (props[side]["minimum"], props[side]["maximum"]) == (MIN_SIDE, MAX_SIDE)
    frac = props["high_noise_frac"]
    assert (frac["minimum"], frac["maximum"]) == HIGH_NOISE_FRAC
    assert "2048x2048" in props["image"]["description"]


@pytest.mark.parametrize(
    "inputs, line",
    [
        (dict(negative_prompt="blurry", guidance_scale=1.0), "negative_prompt is ignored"),
        (dict(high_noise_frac=0.5), "high_noise_frac is ignored with refine=no_refiner"),
    ],
)
def test_ignored_inputs_are_logged(sdxl, caplog, inputs, line):
    with caplog.at_level(logging.INFO, logger="models"):
        plan(sdxl.spec, SDXLInputs(prompt="x", **inputs))
    assert line in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="models"):
        plan(sdxl.spec, SDXLInputs(prompt="x", negative_prompt="blurry"))
    assert "ignored" not in caplog.text


def test_predictor_serves_tiny_sdxl_and_casts_integers(monkeypatch):
    import predict
    from tools.schema import openapi_schema

    for key, value in dict(MODEL_NAME="tiny-sdxl", DEVICE="cpu", SAFETY_CHECKER="0").items():
        monkeypatch.setenv(key, value)
    # setup() adds a stdout handler for coglet; keep it out of the other tests.
    logger = logging.getLogger("models")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logger.level)
    predictor = predict.SDXLPredictor()
    predictor.setup()
    props = openapi_schema(predict.SDXLPredictor)["components"]["schemas"]["Input"]["properties"]
    values = {name: prop.get("default") for name, prop in props.items()}
    # coglet passes JSON numbers like 256.0 through to integer inputs unconverted.
    values.update(prompt="x", width=256.0, height=264.0, num_inference_steps=2.0, seed=1.0)
    assert sizes(predictor.run(**values)) == [(256, 264)]

    monkeypatch.setenv("MODEL_NAME", "tiny-flux-schnell")
    with pytest.raises(ValueError, match="FluxSchnellPredictor"):
        predict.SDXLPredictor().setup()


@pytest.mark.parametrize(
    "inputs",
    [
        dict(num_inference_steps=1),
        dict(num_inference_steps=10, high_noise_frac=0.95, scheduler="DPMSolverMultistep"),
        dict(num_inference_steps=2, prompt_strength=0.5, image=True, mask=True),
        dict(num_inference_steps=30, prompt_strength=0.15, image=True),
    ],
)
def test_ensemble_split_leaving_a_model_no_step_names_the_inputs(sdxl, gradient, tmp_path, inputs):
    if inputs.pop("image", False):
        inputs["image"] = gradient
    if inputs.pop("mask", False):
        inputs["mask"] = half_mask(tmp_path)
    request = SDXLInputs(
        prompt="x", refine="expert_ensemble_refiner", width=256, height=256, **inputs
    )
    with pytest.raises(InputError) as err:
        sdxl.predict(request)
    for word in ("num_inference_steps", "high_noise_frac", "expert_ensemble_refiner"):
        assert word in str(err.value)


def test_a_workable_ensemble_split_runs(sdxl):
    request = SDXLInputs(prompt="x", refine="expert_ensemble_refiner", high_noise_frac=0.5, **SMALL)
    assert len(sdxl.predict(request)) == 1


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_pndm_runs_with_very_few_steps(sdxl, steps):
    request = SDXLInputs(prompt="x", scheduler="PNDM", **{**SMALL, "num_inference_steps": steps})
    assert len(sdxl.predict(request)) == 1


def test_zero_steps_is_refused_not_replaced_by_the_default(sdxl):
    with pytest.raises(InputError, match="num_inference_steps"):
        sdxl.plan(sdxl.spec, SDXLInputs(prompt="x", num_inference_steps=0))


def test_predictions_log_no_empty_float32_warnings(sdxl, gradient, caplog):
    with caplog.at_level(logging.WARNING):
        sdxl.predict(SDXLInputs(prompt="x", image=gradient, **FEW))
    assert not [r for r in caplog.records if "kept in float32" in r.getMessage()]


@pytest.mark.parametrize("refine", ["expert_ensemble_refiner", "base_image_refiner"])
def test_a_variant_without_refiner_refuses_refine_naming_the_fix(refine):
    spec = replace(get_spec("tiny-sdxl"), refiner=None)
    with pytest.raises(InputError, match="has no refiner. Use refine=no_refiner"):
        plan(spec, SDXLInputs(prompt="x", refine=refine))

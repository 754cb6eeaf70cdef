"""FLUX through the plain model API on the tiny variants: modes, sizes, seeds, errors."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.flux.plan import FluxInputs, plan
from models.request.sizes import ASPECT_RATIOS
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import assert_plan_rejects, write_image


@pytest.fixture(scope="module")
def schnell(settings):
    return DiffusionModel(get_spec("tiny-flux-schnell"), replace(settings, safety_checker=False))


@pytest.fixture(scope="module")
def dev(settings):
    return DiffusionModel(get_spec("tiny-flux-dev"), replace(settings, safety_checker=False))


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_txt2img_default_is_one_1024_webp(schnell, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        paths = schnell.predict(FluxInputs(prompt="a cat in a hat", seed=3))
    assert [p.name for p in paths] == ["out-0.webp"]
    with Image.open(paths[0]) as img:
        assert (img.format, img.size) == ("WEBP", (1024, 1024))
    assert "Mode: txt2img, 1024x1024, 4 steps" in caplog.text
    assert "Step 4/4" in caplog.text and "Using seed: 3" in caplog.text


def test_num_outputs_and_fresh_directory_per_request(schnell):
    first = schnell.predict(FluxInputs(prompt="a", megapixels="0.25", num_outputs=3, seed=1))
    assert [p.name for p in first] == ["out-0.webp", "out-1.webp", "out-2.webp"]
    pixels_0, pixels_1 = pixels(first[0]), pixels(first[1])
    second = schnell.predict(FluxInputs(prompt="a", megapixels="0.25", seed=1))
    assert first[0].parent != second[0].parent and second[0].is_file()
    # The previous request's files are gone once the next one starts.
    assert not first[0].parent.exists()
    # Images in one batch differ from each other (different noise per image).
    assert np.abs(pixels_0 - pixels_1).max() > 0


def test_same_seed_same_pixels_other_seed_differs(schnell):
    inputs = FluxInputs(prompt="a red fox", megapixels="0.25", seed=1234, output_format="png")
    # Read each file at once: the next request removes the previous one's folder.
    a, b = pixels(schnell.predict(inputs)[0]), pixels(schnell.predict(inputs)[0])
    c = pixels(schnell.predict(replace(inputs, seed=1235))[0])
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0


def test_random_seed_is_drawn_and_logged(schnell, caplog):
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(schnell.spec, FluxInputs(prompt="x"))
    assert 0 <= job.seed <= 2**32 - 1
    assert f"Using seed: {job.seed}" in caplog.text


@pytest.mark.parametrize("ratio", list(ASPECT_RATIOS))
@pytest.mark.parametrize("megapixels", ["1", "0.25"])
def test_aspect_ratio_sizes_follow_the_table(schnell, ratio, megapixels):
    width, height = ASPECT_RATIOS[ratio]
    if megapixels == "0.25":
        width, height = width // 2, height // 2
    job = plan(schnell.spec, FluxInputs(prompt="x", aspect_ratio=ratio, megapixels=megapixels))
    assert (job.width, job.height) == (width, height)


def test_generated_image_has_the_planned_size(schnell):
    path = schnell.predict(FluxInputs(prompt="x", aspect_ratio="21:9", megapixels="0.25"))[0]
    assert Image.open(path).size == (768, 320)


def test_img2img_output_takes_the_normalised_input_size(schnell, tmp_path, caplog):
    source = write_image(tmp_path / "in.png", size=(2000, 1000))
    with caplog.at_level(logging.INFO, logger="models"):
        paths = schnell.predict(FluxInputs(prompt="x", image=source, seed=1))  # default size
    assert Image.open(paths[0]).size == (1440, 720)
    assert "Mode: img2img" in caplog.text and "aspect_ratio is ignored" in caplog.text


def test_default_size_is_the_image_size_or_one_megapixel(schnell, tmp_path):
    small = write_image(tmp_path / "small.png", size=(500, 330))
    assert plan(schnell.spec, FluxInputs(prompt="x", image=small)).width == 496
    job = plan(schnell.spec, FluxInputs(prompt="x", aspect_ratio="16:9"))
    assert (job.width, job.height) == (1344, 768)


def test_img2img_megapixels_keeps_the_input_shape(schnell, tmp_path):
    source = write_image(tmp_path / "in.png", size=(300, 200))
    job = plan(schnell.spec, FluxInputs(prompt="x", image=source, megapixels="0.25"))
    assert job.width % 16 == 0 and job.height % 16 == 0
    assert abs(job.width / job.height - 1.5) < 0.05
    assert abs(job.width * job.height - 512 * 512) < 0.05 * 512 * 512


def test_inpaint_keeps_size_and_uses_the_mask(dev, tmp_path, caplog):
    source = write_image(tmp_path / "in.png", size=(500, 330))
    mask = Image.new("L", (100, 66), 0)
    mask.paste(255, (50, 0, 100, 66))
    mask.save(tmp_path / "mask.png")
    with caplog.at_level(logging.INFO, logger="models"):
        job = plan(
            dev.spec,
            FluxInputs(
                prompt="x", image=source, mask=tmp_path / "mask.png", megapixels="match_input"
            ),
        )
        paths = dev.predict(
            FluxInputs(
                prompt="x",
                image=source,
                mask=tmp_path / "mask.png",
                megapixels="match_input",
                num_inference_steps=4,
            )
        )
    assert job.mode == "inpaint" and job.mask.size == job.image.size == (496, 336)
    assert set(np.unique(np.asarray(job.mask))) <= {0, 255}  # nearest keeps it binary
    assert Image.open(paths[0]).size == (496, 336)
    assert "Mode: inpaint" in caplog.text


def test_dev_guidance_and_steps_defaults(dev):
    job = plan(dev.spec, FluxInputs(prompt="x"))
    assert (job.steps, job.guidance) == (28, 3.0)
    job = plan(dev.spec, FluxInputs(prompt="x", guidance=7.5, num_inference_steps=50))
    assert (job.steps, job.guidance) == (50, 7.5)


def test_schnell_takes_no_guidance(schnell):
    assert plan(schnell.spec, FluxInputs(prompt="x")).guidance == 0.0


@pytest.mark.parametrize(
    "inputs, words",
    [
        (dict(mask="mask.png"), ["mask", "image"]),
        (dict(megapixels="2"), ["megapixels"]),
        (dict(image="in.png", prompt_strength=0.0), ["prompt_strength", "num_inference_steps"]),
        (dict(num_inference_steps=0), ["num_inference_steps"]),
        (dict(num_inference_steps=5), ["num_inference_steps", "1", "4"]),
        (dict(num_outputs=5), ["num_outputs"]),
        (dict(seed=2**32), ["seed"]),
        (dict(aspect_ratio="7:3"), ["aspect_ratio"]),
        (dict(output_format="gif"), ["output_format", '"webp", "jpg", "png"']),
        (dict(output_quality=-1), ["output_quality", "0 to 100"]),
        (dict(output_quality=101), ["output_quality", "0 to 100"]),
    ],
)
def test_bad_inputs_name_the_input(schnell, tmp_path, inputs, words):
    assert_plan_rejects(schnell, tmp_path, inputs, words)


def test_bad_output_settings_are_refused_before_any_generation(schnell, monkeypatch):
    monkeypatch.setattr(schnell.engine, "generate", lambda *a, **k: pytest.fail("generated"))
    with pytest.raises(InputError, match="^output_format 'gif'"):
        schnell.predict(FluxInputs(prompt="x", output_format="gif"))


def test_corrupt_image_is_an_input_error(schnell, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="image"):
        plan(schnell.spec, FluxInputs(prompt="x", image=tmp_path / "bad.png"))


def test_go_fast_on_a_cpu_says_so_and_runs_the_eager_model(schnell, caplog):
    inputs = dict(prompt="x", megapixels="0.25", num_inference_steps=1, seed=3, output_format="png")
    with caplog.at_level(logging.INFO, logger="models"):
        fast = schnell.predict(FluxInputs(**inputs, go_fast=True))[0].read_bytes()
    assert "go_fast: eager (CPU: compiling does not pay off here; COMPILE=on forces it)" in (
        caplog.text
    )
    assert schnell.engine.fast is None
    assert schnell.predict(FluxInputs(**inputs, go_fast=False))[0].read_bytes() == fast


def test_low_strength_still_runs_one_flux_step(schnell, tmp_path, caplog):
    # FLUX img2img rounds the skipped steps down: 0.2 x 4 steps runs one step.
    source = write_image(tmp_path / "in.png", size=(256, 256))
    inputs = FluxInputs(prompt="x", image=source, prompt_strength=0.2, megapixels="match_input")
    with caplog.at_level(logging.INFO, logger="models"):
        assert len(schnell.predict(inputs)) == 1
    assert "Step 1/1" in caplog.text


def test_model_weights_single_file_replaces_only_the_transformer(settings, tmp_path):
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from models.weights.resolver import resolve

    folder = resolve("tiny-flux-schnell", settings)
    transformer = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    # A "fine-tune": the same network with different weights, as one .safetensors file.
    tuned = {k: (v * 1.5).contiguous() for k, v in transformer.state_dict().items()}
    save_file(tuned, tmp_path / "my-flux-finetune.safetensors")
    base = replace(settings, safety_checker=False)
    custom = replace(base, model_weights=str(tmp_path / "my-flux-finetune.safetensors"))
    spec = get_spec("tiny-flux-schnell")
    model = DiffusionModel(spec, custom)
    loaded = model.engine.pipes["txt2img"].transformer.state_dict()
    assert all(torch.equal(loaded[k], tuned[k]) for k in tuned)
    inputs = FluxInputs(prompt="a fox", megapixels="0.25", seed=9, output_format="png")
    ours = pixels(model.predict(inputs)[0])
    theirs = pixels(DiffusionModel(spec, base).predict(inputs)[0])
    assert np.abs(ours - theirs).max() > 0


def test_inpainting_keeps_the_black_area_in_latent_space(dev, tmp_path):
    # As for SDXL (tests/sdxl/test_sdxl.py): diffusers keeps the black area in latent space,
    # and the VAE decoder then mixes some of the repainted half into it, so the check is
    # exact in latents. FLUX's pipeline encodes the input with a sample of the VAE's
    # distribution, drawn first from the request's generator: the same draw here.
    from models.loras.source import Tokens
    from models.request.job import seeded_generator

    y, x = np.mgrid[0:256, 0:256]
    picture = np.stack([x, y, 255 - (x + y) // 2], -1).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (128, 0, 256, 256))  # left half kept, right half repainted
    mask.save(tmp_path / "mask.png")
    inputs = FluxInputs(
        prompt="a cat",
        image=tmp_path / "in.png",
        mask=tmp_path / "mask.png",
        num_inference_steps=4,
        seed=5,
    )
    job, engine = plan(dev.spec, inputs), dev.engine
    with torch.inference_mode(), engine.request(job, Tokens()) as (pipe,):
        kwargs = {**engine.call_args(job, seeded_generator(job.seed)), "output_type": "latent"}
        packed = pipe(**kwargs).images
        result = pipe._unpack_latents(packed, job.height, job.width, pipe.vae_scale_factor)
        encoded = pipe.vae.encode(pipe.image_processor.preprocess(job.image)).latent_dist
        encoded = encoded.sample(seeded_generator(job.seed))
        clean = (encoded - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    keep, repaint = slice(0, 16), slice(16, 32)  # latent columns (256 px / 8)
    assert torch.allclose(result[..., keep], clean[..., keep], atol=1e-2)
    assert (result[..., repaint] - clean[..., repaint]).abs().mean() > 0.5

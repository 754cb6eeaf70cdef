"""The mini models draw what they are told: models/mini/judge.py reads their pictures back.

Held-out prompts (scenes never shown in training), img2img keeping structure,
inpainting changing only the masked part, and the quick start's picture through
predict(). Their weights are committed (mini/), trained by script/train-mini."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.mini import judge, world
from models.mini.data import to_tensor
from models.serving.model import DiffusionModel
from models.specs import get_spec
from models.weights.builds import MINI_DIR
from tools.bench.quality import RECOMMENDED_GUIDANCE, draw, scene_inputs

MODELS = ["mini-flux-schnell", "mini-sdxl"]


@pytest.fixture(scope="module", params=MODELS)
def mini(request, settings):
    spec = get_spec(request.param)
    return DiffusionModel(spec, replace(settings, safety_checker=False))


def test_the_judge_reads_every_reference_scene_at_every_trained_shape():
    from models.mini.data import SIZES

    for width, height in sorted(set(SIZES)):
        pairs = [(s, world.render(s, width, height)) for s in world.all_scenes()]
        assert judge.score(pairs) == {"background": 1, "colour": 1, "shape": 1, "position": 1}


def test_the_judge_reads_the_mini_vaes_round_trip_of_every_scene_at_128_px():
    """A model whose latents were exactly the encoded picture asked for would be read as
    right: the mini VAE rounds a triangle's corners, and the judge must not call it a
    circle (a triangle's round trip fills up to 0.77 of its box, a circle's 0.84)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(MINI_DIR / "flux-schnell" / "vae").float()
    scenes = world.all_scenes()
    with torch.no_grad():
        latents = vae.encode(to_tensor([world.render(s, 128, 128) for s in scenes])).latent_dist
        pixels = vae.decode(latents.mean).sample
    images = [Image.fromarray(a) for a in _to_uint8(pixels)]
    assert judge.score(list(zip(scenes, images, strict=True))) == {
        "background": 1, "colour": 1, "shape": 1, "position": 1
    }  # fmt: skip


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def test_held_out_prompts_are_drawn_as_asked(mini):
    _, held_out = world.split()
    pairs = [
        (scene, draw(mini, scene_inputs(mini.spec, scene, seed=i, square=True))[0])
        for i, scene in enumerate(held_out)
    ]
    scores = judge.score(pairs)
    assert scores["background"] >= 0.9 and scores["colour"] >= 0.8, scores


def test_the_quick_start_prompt_gives_that_picture_at_the_size_asked(mini, caplog):
    name = mini.spec.name
    extra = {"guidance_scale": RECOMMENDED_GUIDANCE[name]} if name in RECOMMENDED_GUIDANCE else {}
    inputs = mini.inputs(prompt="a red circle on a blue background", seed=1, go_fast=False, **extra)
    with caplog.at_level(logging.INFO, logger="models"):
        [path] = mini.predict(inputs)
    image = Image.open(path)
    assert image.size == (1024, 1024)
    assert "drawing at 128x128, then upscaling to 1024x1024" in caplog.text
    reading = judge.read(image)
    assert (reading.background, reading.colour, reading.shape, reading.position) == (
        "blue", "red", "circle", "centre"
    )  # fmt: skip


def _reference(tmp_path, scene, name="in.png", size=(128, 128)):
    path = tmp_path / name
    world.render(scene, *size).save(path)
    return path


def test_img2img_at_low_strength_keeps_the_shape_colour_and_position(mini, tmp_path):
    scene = world.Scene("yellow", "square", "black", "left")
    other = world.Scene("blue", "circle", "white", "right")
    inputs = scene_inputs(
        mini.spec, other, seed=2, square=True,
        image=_reference(tmp_path, scene), prompt_strength=0.3,
    )  # fmt: skip
    [image] = draw(mini, inputs)
    reading = judge.read(image)
    if mini.spec.family == "sdxl":
        # At 0.3 the mini SDXL keeps the shape and its place, not its colours: at its
        # 16x16 latents timestep 300 hides more than FLUX's noise level 0.3 does
        # (models/mini/sdxl.py). A known limit, stated in the README.
        assert (reading.shape, reading.position) == ("square", "left"), reading
    else:
        assert (reading.colour, reading.position) == ("yellow", "left"), reading


def test_inpainting_changes_the_masked_part_and_keeps_the_rest(mini, tmp_path):
    # One shape per picture, as in training: the decoder's attention has only ever seen
    # one shape colour, so two shapes of different colours would blend.
    scene = world.Scene("red", "circle", "blue", "left")
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (0, 0, 64, 128))  # repaint the left half, where the circle is
    mask.save(tmp_path / "mask.png")
    wanted = world.Scene("yellow", "circle", "blue", "left")
    inputs = scene_inputs(
        mini.spec, wanted, seed=3, square=True,
        image=_reference(tmp_path, scene), mask=tmp_path / "mask.png", prompt_strength=1.0,
    )  # fmt: skip
    [image] = draw(mini, inputs)
    before = np.asarray(world.render(scene, 128, 128), dtype=np.float32)
    after = np.asarray(image, dtype=np.float32)
    # The right half (a latent pixel is 8 px away from the mask) is within 5/255 of
    # what the model's VAE round trip alone gives there.
    vae = next(iter(mini.engine.pipes.values())).vae
    with torch.no_grad():
        latents = vae.encode(to_tensor([world.render(scene, 128, 128)])).latent_dist.mean
        trip = vae.decode(latents).sample[0].permute(1, 2, 0).clamp(-1, 1)
    round_trip = np.abs((trip.numpy() + 1) * 127.5 - before)[:, 72:].mean()
    assert np.abs(after[:, 72:] - before[:, 72:]).mean() < round_trip + 5
    assert np.abs(after[:, :64] - before[:, :64]).mean() > 12
    reading = judge.read(image)
    assert reading.position == "left", reading
    if mini.spec.family == "flux":  # the mini SDXL repaints it, not always yellow (README)
        assert reading.colour == "yellow", reading


@pytest.mark.server
def test_a_held_out_prompt_through_the_real_server(tmp_path_factory):
    from tests.conftest import decode, serving
    from tools.server import predict

    scene = world.split()[1][0]
    with serving("mini-flux-schnell", tmp_path_factory) as url:
        inputs = {"prompt": scene.prompt, "seed": 4, "megapixels": "0.25", "output_format": "png"}
        status, body = predict(url, inputs)
    assert status == 200 and body["status"] == "succeeded", body
    image = decode(body["output"][0])
    assert image.size == (512, 512)
    reading = judge.read(image)
    assert (reading.background, reading.colour) == (scene.background, scene.colour), reading


@pytest.mark.slow
def test_train_mini_rebuilds_bit_for_bit(tmp_path):
    import subprocess
    import sys

    from models.settings import REPO_ROOT

    def train(out):
        command = [sys.executable, "-m", "models.mini.train", "--steps", "2", "--vae-steps", "2",
                   "--out", str(out)]  # fmt: skip
        subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=600)
        return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first = train(tmp_path / "a")
    for family in ("flux-schnell", "sdxl", "flux-kontext"):
        assert any(p.parts[0] == family and p.suffix == ".safetensors" for p in first)
    assert train(tmp_path / "b") == first


@pytest.mark.parametrize("family", ["flux", "sdxl"])
def test_train_mini_embeds_prompts_as_served_whatever_ran_before(family):
    """The denoiser's stage trains on the same prompt embeddings whether the VAE was
    trained just before in the same process (one command) or not (the stage rerun
    alone), and they are the served pipeline's: encoders in eval mode, no dropout."""
    from models.mini import flux as mini_flux
    from models.mini import sdxl as mini_sdxl

    trainer = {"flux": mini_flux, "sdxl": mini_sdxl}[family]
    pipe = trainer.build(0)
    assert not pipe.text_encoder.training and not pipe.text_encoder_2.training
    prompts = ["a red circle on a blue background"]
    first = trainer.encode_prompts(pipe, prompts)[prompts[0]]
    torch.manual_seed(12345)
    again = trainer.encode_prompts(pipe, prompts)[prompts[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_the_vae_data_has_random_colours_in_the_share_asked_repeatably():
    from models.mini.data import Batches

    def colours(seed):
        scenes, x = Batches(seed, 64, recolour=0.5).next()
        return [(s.colour, s.background) for s in scenes], x

    (first, pixels), (again, same) = colours(3), colours(3)
    assert first == again and torch.equal(pixels, same)
    random = [pair for pair in first if pair[0].startswith("#")]
    assert 16 <= len(random) <= 48 and all(b.startswith("#") for _, b in random)
    scene = world.Scene("#8c28aa", "square", "#000000")
    assert world.render(scene, 64, 64).getpixel((32, 32)) == (0x8C, 0x28, 0xAA)

"""Kontext LoRAs from before/after pairs: the archive's layout (a pair missing its start
picture is refused, naming it), training on tiny-flux-kontext-dev, the outputs, and the
Kontext predictor loading the LoRA with lora_weights."""

from __future__ import annotations

import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.flux.kontext import KontextInputs
from models.serving.model import DiffusionModel
from models.specs import get_spec
from models.train import data
from models.train.config import TrainInputs, plan
from models.train.objectives import KontextObjective
from tests.train.helpers import archive, png, quick_run

pytestmark = pytest.mark.slow  # trains a model


def pairs(path):
    """Two edits: a blue circle made red, a green one made red, with their instructions."""
    return archive(
        path,
        {
            "one.png": png(color=(220, 30, 30)),
            "one_start.jpg": png(color=(30, 30, 220)),  # any image format before the edit
            "one.txt": b"make the circle red",
            "two.png": png(color=(220, 30, 30)),
            "two_start.png": png(color=(30, 200, 30)),
            "two.txt": b"make the circle red",
        },
    )


@pytest.fixture(scope="module")
def kontext_run(settings, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kontext")
    result, tar = quick_run(settings, "tiny-flux-kontext-dev", pairs(folder / "pairs.tar"),
                            folder / "lora", trigger_word="", steps=4)  # fmt: skip
    return result, tar, folder / "lora"


def test_a_pair_without_its_start_picture_is_refused_naming_it(tmp_path):
    names = ["a.png", "a.txt", "b.png", "b_start.webp"]
    for name in names:
        (tmp_path / name).write_bytes(png() if not name.endswith(".txt") else b"make it red")
    with pytest.raises(InputError, match=r"a\.png has no start image a_start\.<ext>"):
        data.load_images(tmp_path, names, pairs=True)
    loaded = data.load_images(tmp_path, ["b.png", "b_start.webp"], pairs=True)
    assert [(i.name, i.start.size) for i in loaded] == [("b.png", (64, 64))]


def test_a_pairs_start_picture_is_cut_to_the_same_bucket(tmp_path):
    item = data.TrainImage("a.png", Image.new("RGB", (96, 64)), None, "x",
                           start=Image.new("RGB", (64, 96), (255, 0, 0)))  # fmt: skip
    prepared = data.prepare(item, data.Sample(0, 64, 64))
    assert prepared["pixels"].shape == prepared["start_pixels"].shape == (3, 64, 64)
    assert torch.allclose(prepared["start_pixels"][0], torch.ones(64, 64))  # red, in [-1, 1]


def test_kontext_trains_on_pairs_and_writes_the_usual_outputs(kontext_run):
    result, tar, out = kontext_run
    assert result.steps_done == 4 and result.fixed_loss_after < result.fixed_loss_before
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {"lora.safetensors", "lora_kohya.safetensors", "config.json",
            "captions/one.txt", "samples/0.webp"} <= names  # fmt: skip
    assert (out / "captions" / "one.txt").read_text().strip() == "make the circle red"


def test_the_kontext_predictor_loads_the_trained_lora(settings, kontext_run, tmp_path):
    _, _, out = kontext_run
    model = DiffusionModel(
        get_spec("tiny-flux-kontext-dev"), replace(settings, safety_checker=False)
    )
    start = tmp_path / "start.png"
    start.write_bytes(png(color=(30, 30, 220)))

    def edit(**kw):
        inputs = KontextInputs(prompt="make the circle red", input_image=start, seed=2,
                               num_inference_steps=4, output_format="png", **kw)  # fmt: skip
        return np.asarray(Image.open(model.predict(inputs)[0]), dtype=np.int16)

    plain = edit()
    lora = str(out / "lora.safetensors")
    assert np.abs(edit(lora_weights=lora) - plain).mean() > 0.5
    assert np.array_equal(edit(lora_weights=lora, lora_scale=0), plain)


def test_the_kontext_objective_puts_the_start_latents_after_the_noisy_ones(settings):
    spec = get_spec("tiny-flux-kontext-dev")
    config = plan(spec, TrainInputs(input_images=__file__, seed=1))
    objective = KontextObjective(type("Pipe", (), {"scheduler": None})(), spec, config)
    packed, ids = torch.zeros(1, 16, 64), torch.zeros(16, 3)
    extra = {"start_latents": torch.ones(1, 16, 8, 8)}
    hidden, all_ids = objective.sequence(packed, ids, extra)
    assert hidden.shape == (1, 32, 64) and all_ids.shape == (32, 3)
    assert (all_ids[16:, 0] == 1).all() and (all_ids[:16, 0] == 0).all()
    assert (hidden[:, 16:] == 1).all()


@pytest.mark.parametrize(
    "name", ["tiny-flux-fill-dev", "tiny-flux-canny-dev", "tiny-flux-depth-dev", "flux-redux-dev"]
)
def test_lora_training_of_dev_derived_models_is_refused_naming_the_fix(name):
    with pytest.raises(InputError, match="Train on flux-dev"):
        plan(get_spec(name), TrainInputs(input_images=__file__))

"""A LoRA trained with train.py's loop teaches the mini FLUX a new concept: "TOK" is a
purple background, a colour its base training never showed (models/mini/world.NEW_COLOURS).
Prompts with TOK then draw it; prompts without TOK draw what they drew before.

The training set is what a user would send for that: 12 pictures of the concept,
captioned with TOK where the colour's name would be, and 24 regularisation pictures of
the base world with their own captions. The trigger word is left empty, so captions
train as written: with "TOK" in front of every caption (what a trigger word does), the
regularisation pictures would teach nothing about prompts without it, and one of 4
such prompts changed (measured, docs/benchmarks.md). Recipe: 400 steps of 2 pictures,
lr 3e-3, rank 8; on the committed mini FLUX, with training seeds 7 and 1, 5 of the 6
TOK prompts below drew purple (so the test allows one miss) and every prompt without
TOK kept its reading, each picture within 5.3/255 (mean) of the base model's.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest

from models.mini import judge, world
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.train.helpers import archive, quick_run
from tools.bench.quality import draw, scene_inputs

pytestmark = pytest.mark.slow  # trains a model: script/test -m 'not slow' skips it

MODEL = "mini-flux-schnell"
# Taught with TOK: every shape colour, shape and position.
CONCEPT = [
    world.Scene(colour, shape, "purple", position)
    for colour, shape, position in (
        ("red", "circle", "centre"), ("yellow", "square", "left"), ("white", "triangle", "top"),
        ("green", "square", "right"), ("blue", "triangle", "bottom"), ("black", "circle", "right"),
        ("white", "circle", "left"), ("green", "triangle", "centre"), ("red", "square", "top"),
        ("yellow", "triangle", "bottom"), ("black", "square", "centre"), ("blue", "circle", "top"),
    )
]  # fmt: skip
# Regularisation: base training scenes with their own captions (no TOK).
REGULAR = world.split()[0][::17]
# Drawn with TOK: colour, shape and position combinations the LoRA never saw.
WITH_TOK = [
    world.Scene("blue", "circle", "purple", "right"),
    world.Scene("black", "square", "purple", "bottom"),
    world.Scene("green", "triangle", "purple", "left"),
    world.Scene("white", "circle", "purple", "top"),
    world.Scene("red", "square", "purple", "centre"),
    world.Scene("yellow", "triangle", "purple", "left"),
]
# Drawn without TOK: held-out scenes (neither the base model nor the LoRA saw them).
WITHOUT_TOK = world.split()[1][::7]
# Mean pixel difference (0-255) under which a picture counts as unchanged: the judge's
# reading must stay the same too. Another seed moved a base model's picture by 6 (one
# check); another shape colour moves it by more than 15 (checked below).
UNCHANGED = 15


def tok(scene: world.Scene) -> str:
    return scene.prompt.replace("purple", "TOK")


def _png(scene: world.Scene) -> bytes:
    buf = io.BytesIO()
    world.render(scene, 64, 64).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(settings, tmp_path_factory):
    """train.py's loop (tests/train/helpers.quick_run) on the concept + regularisation set:
    (its Result, the LoRA's .tar)."""
    folder = tmp_path_factory.mktemp("tok")
    members = {}
    for i, scene in enumerate(CONCEPT):
        members[f"tok-{i}.png"], members[f"tok-{i}.txt"] = _png(scene), tok(scene).encode()
    for i, scene in enumerate(REGULAR):
        members[f"base-{i}.png"], members[f"base-{i}.txt"] = _png(scene), scene.prompt.encode()
    return quick_run(
        settings, MODEL, archive(folder / "data.zip", members), folder / "lora",
        trigger_word="", caption_dropout_rate=0.0, steps=400, batch_size=2,
        learning_rate=3e-3, lora_rank=8, checkpoint_every=0, samples=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def mini(settings):
    spec = get_spec(MODEL)
    return DiffusionModel(spec, replace(settings, safety_checker=False))


def _draw(mini, scene, seed, **extra):
    return draw(mini, scene_inputs(mini.spec, scene, seed=seed, square=True, **extra))[0]


def _difference(a, b) -> float:
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


def test_the_training_set_is_what_the_test_says(trained):
    result, _ = trained
    assert len(REGULAR) == 24 and len(WITHOUT_TOK) == 8
    assert not {s.prompt for s in WITHOUT_TOK} & {s.prompt for s in REGULAR}
    assert result.fixed_loss_after < result.fixed_loss_before


def test_tok_draws_the_purple_background_it_was_taught(mini, trained):
    _, lora = trained
    before = [judge.read(_draw(mini, s, i, prompt=tok(s))) for i, s in enumerate(WITH_TOK)]
    after = [
        judge.read(_draw(mini, s, i, prompt=tok(s), lora_weights=str(lora)))
        for i, s in enumerate(WITH_TOK)
    ]
    assert not any(r.background == "purple" for r in before), before
    assert sum(r.background == "purple" for r in after) >= len(WITH_TOK) - 1, after
    colours = sum(r.colour == s.colour for r, s in zip(after, WITH_TOK, strict=True))
    positions = sum(r.position == s.position for r, s in zip(after, WITH_TOK, strict=True))
    assert colours >= len(WITH_TOK) - 1 and positions >= len(WITH_TOK) - 1, after


def test_prompts_without_tok_draw_what_they_drew_before(mini, trained):
    _, lora = trained
    for i, scene in enumerate(WITHOUT_TOK):
        plain = _draw(mini, scene, i)
        with_lora = _draw(mini, scene, i, lora_weights=str(lora))
        a, b = judge.read(plain), judge.read(with_lora)
        assert (b.background, b.colour, b.position) == (a.background, a.colour, a.position), (
            scene,
            a,
            b,
        )
        assert _difference(plain, with_lora) < UNCHANGED, scene
    # The threshold is meaningful: changing only the shape's colour moves a picture more.
    scene = WITHOUT_TOK[0]
    other = replace(scene, colour=next(c for c in ("white", "black") if c != scene.colour))
    assert _difference(_draw(mini, scene, 0), _draw(mini, other, 0)) > UNCHANGED

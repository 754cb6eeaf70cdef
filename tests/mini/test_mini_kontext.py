"""The mini Kontext edits as it is told: on edits of scenes never shown in training, the
judge (models/mini/judge.py) reads the edited attribute as asked and the others as they
were. Its weights are committed (mini/flux-kontext), trained by script/train-mini."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from PIL import Image

from models.mini import edits, judge
from models.mini.world import Scene, render
from models.serving.model import DiffusionModel
from models.specs import get_spec
from tests.conftest import data_uri, decode, serving
from tools.bench.quality import bench_edit_quality
from tools.server import predict


@pytest.fixture(scope="module")
def kontext(settings):
    spec = get_spec("mini-flux-kontext")
    return DiffusionModel(spec, replace(settings, safety_checker=False))


def test_edits_and_their_split_are_what_the_world_allows():
    train, held = edits.split_edits()
    trained_starts = {e.start for e in train}
    assert not trained_starts & {e.start for e in held}  # held-out scenes never start one
    assert {e.kind for e in held} == set(edits.KINDS)
    edit = edits.Edit(Scene("red", "circle", "blue", "left"), "position", "top")
    assert edit.result == Scene("red", "circle", "blue", "top")
    assert edit.instruction == "move the shape to the top"
    # A pair's pictures share their jitter: only the edited attribute differs.
    batch = edits.EditBatches(3, 8)
    chosen, starts, results = batch.next()
    again = edits.EditBatches(3, 8).next()
    assert chosen == again[0] and starts.equal(again[1]) and results.equal(again[2])


def test_held_out_edits_change_what_they_ask_and_keep_the_rest(kontext):
    # script/bench --quality's figures: 200 edits, square and at the other shapes.
    result = bench_edit_quality(kontext, 200)
    for shapes in ("square", "other_shapes"):
        assert result[shapes]["edited"] >= 0.8 and result[shapes]["kept"] >= 0.9, result


@pytest.mark.server
def test_an_edit_through_the_real_server(tmp_path_factory):
    start = Scene("yellow", "square", "black", "centre")
    buffer = io.BytesIO()
    render(start, 256, 256).save(buffer, format="PNG")
    with serving("mini-flux-kontext", tmp_path_factory) as url:
        status, body = predict(url, {"prompt": "make the background white", "seed": 1,
                                     "input_image": data_uri(buffer.getvalue())})  # fmt: skip
    assert status == 200 and body["status"] == "succeeded", body.get("error")
    picture = decode(body["output"])
    assert picture.size == (1024, 1024)
    reading = judge.read(picture.resize((128, 128), Image.Resampling.BOX))
    assert (reading.background, reading.colour, reading.shape) == ("white", "yellow", "square")

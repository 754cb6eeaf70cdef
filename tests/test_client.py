"""script/predict: cog predict's flags and output names, through the real server."""

from __future__ import annotations

import base64

import pytest
from PIL import Image

from tests.conftest import image_bytes, script_predict, write_image
from tools.client import parse_inputs, write_outputs

SCHEMA = {
    "components": {
        "schemas": {
            "Input": {
                "properties": {
                    "prompt": {"type": "string"},
                    "seed": {"type": "integer", "nullable": True},
                    "strength": {"type": "number"},
                    "fast": {"type": "boolean"},
                    "image": {"type": "string", "format": "uri"},
                    "fmt": {"allOf": [{"$ref": "#/components/schemas/fmt"}]},
                    "steps": {"allOf": [{"$ref": "#/components/schemas/steps"}]},
                }
            },
            "fmt": {"enum": ["webp", "png"], "type": "string"},
            "steps": {"enum": [1, 4], "type": "integer"},
        }
    }
}


def test_inputs_are_typed_by_the_schema(tmp_path):
    picture = write_image(tmp_path / "cat.png", size=(8, 8))
    inputs = parse_inputs(
        [
            "prompt=a cat=hat",
            "seed=42",
            "strength=0.5",
            "fast=true",
            f"image=@{picture}",
            "fmt=png",
            "steps=4",
        ],
        SCHEMA,
    )
    assert inputs["prompt"] == "a cat=hat"
    assert (inputs["seed"], inputs["strength"], inputs["fast"], inputs["steps"]) == (
        42,
        0.5,
        True,
        4,
    )
    assert inputs["fmt"] == "png"
    header, _, payload = inputs["image"].partition(",")
    assert header == "data:image/png;base64"
    assert base64.b64decode(payload) == picture.read_bytes()


@pytest.mark.parametrize(
    "pair, message",
    [
        ("prompt", "expected format is 'name=value'"),
        ("colour=red", "Unknown input 'colour'"),
        ("seed=four", "seed must be a integer"),
        ("fast=maybe", "fast must be true or false"),
        ("image=@/no/such/file.png", "Input file not found"),
    ],
)
def test_bad_flags_say_what_is_wrong(pair, message):
    with pytest.raises(SystemExit, match=message):
        parse_inputs([pair], SCHEMA)


def test_outputs_are_named_like_cog_predict(tmp_path):
    uri = "data:image/webp;base64," + base64.b64encode(image_bytes(fmt="WEBP")).decode()
    assert write_outputs([uri, uri], tmp_path / "output") == [
        tmp_path / "output.0.webp",
        tmp_path / "output.1.webp",
    ]
    assert write_outputs(uri, tmp_path / "single") == [tmp_path / "single.webp"]
    assert write_outputs([uri], tmp_path / "named.png") == [tmp_path / "named.0.png"]


@pytest.mark.server
def test_script_predict_writes_a_1024_webp(tmp_path):
    result = script_predict(tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=a cat in a hat")
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "output.0.webp") as img:
        assert (img.format, img.size) == ("WEBP", (1024, 1024))
    assert "Written output to: output.0.webp" in result.stderr


@pytest.mark.server
def test_script_predict_reports_invalid_input_and_fails(tmp_path):
    result = script_predict(
        tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=x", "-i", "num_outputs=9"
    )
    assert result.returncode == 1
    assert "Invalid input num_outputs" in result.stderr
    assert not list(tmp_path.glob("output*"))

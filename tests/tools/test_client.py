"""script/predict: cog run's flags and output names, through the real server."""

from __future__ import annotations

import base64
import subprocess

import pytest
from PIL import Image

from models.settings import REPO_ROOT
from tests.conftest import image_bytes, script_predict, write_image
from tools.client import error_message, parse_inputs, write_outputs

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
        ("seed=four", "seed must be an integer"),
        ("strength=lots", "strength must be a number"),
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


def test_outputs_keep_their_real_extension(tmp_path, capsys):
    png = "data:image/png;base64," + base64.b64encode(image_bytes(fmt="PNG")).decode()
    assert write_outputs([png], tmp_path / "sd.webp") == [tmp_path / "sd.0.png"]
    assert "asked for .webp, but the output is PNG" in capsys.readouterr().err
    with Image.open(tmp_path / "sd.0.png") as img:
        assert img.format == "PNG"
    assert write_outputs(png, tmp_path / "one.png") == [tmp_path / "one.png"]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "error",
    [
        "Prediction failed: Prediction failed: InputError: mask was given without image",
        "InputError: mask was given without image",
        "mask was given without image",
    ],
)
def test_errors_are_said_once(error):
    assert error_message(error) == "mask was given without image"


@pytest.mark.server
def test_script_predict_writes_a_1024_webp(tmp_path):
    result = script_predict(tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=a cat in a hat")
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "output.0.webp") as img:
        assert (img.format, img.size) == ("WEBP", (1024, 1024))
    assert "Written output to: output.0.webp" in result.stderr


@pytest.mark.server
def test_script_predict_creates_the_output_folder_and_says_errors_once(tmp_path):
    result = script_predict(
        tmp_path,
        *("--model", "tiny-flux-schnell", "-o", "new/dir/cat.webp", "-i", "prompt=x"),
        *("-i", "megapixels=0.25", "-i", "num_inference_steps=1", "-i", "output_format=png"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Image.open(tmp_path / "new" / "dir" / "cat.0.png") as img:
        assert img.format == "PNG"
    mask = write_image(tmp_path / "mask.png", size=(8, 8))
    result = script_predict(
        tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=x", "-i", f"mask=@{mask}"
    )
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if "Prediction failed" in line]
    assert failed == [
        "Prediction failed: mask was given without image: inpainting needs both. Send "
        "`image` with `mask`, or leave out `mask`."
    ]


def test_script_predict_help_documents_file_inputs_and_names():
    result = subprocess.run(
        [REPO_ROOT / "script" / "predict", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert "KEY=@FILE uploads a file" in result.stdout
    assert "real type" in result.stdout


@pytest.mark.server
def test_script_predict_reports_invalid_input_and_fails(tmp_path):
    result = script_predict(
        tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=x", "-i", "num_outputs=9"
    )
    assert result.returncode == 1
    assert "Invalid input num_outputs" in result.stderr
    assert not list(tmp_path.glob("output*"))

"""What a user sees from each command is ours: no library warning, no deprecation, only
the lines we print (models/log.py drops the libraries' noise, each kind named there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

from models.settings import REPO_ROOT
from tests.conftest import script_predict
from tools.server import model_ref, predict, running

# Every line train.py prints for a short training of a tiny model, as patterns.
TRAINING_LINES = [
    r"Built tiny-[\w-]+ in \S+ \([\d.]+s\)",  # a first run builds the tiny models
    r"learning_rate: [\d.e-]+, the default for tiny-flux-dev",
    r"Using seed: \d+",
    r"autocaption: \d\.png: '.*'",
    r"Caption of \d\.png: 'TOK, .*'",
    r"\d+ images, \d+ samples in \d+ buckets; global batch \d+ \(.*\)",
    r"Loss on a fixed batch before training: [\d.]+",
    r"step \d/2 loss [\d.]+ \(mean of last \d: [\d.]+\) [\d.]+ steps/s, eta \d+s",
    r"Loss on the fixed batch: [\d.]+ before, [\d.]+ after training",
    r"Sample \d\.webp: '.*'",
    r"Wrote lora\.tar \([\d.]+ MB\)",
]
# And what script/predict prints for one prediction.
PREDICT_LINES = [
    r"Starting the Cog server for tiny-flux-schnell\.\.\.",
    r"Running prediction with \[.*\]",
    r"Using seed: \d+",
    r"Mode: txt2img, 512x512, 1 steps",
    r"go_fast: .*",
    r"Step 1/1",
    r"Total safe images: 1 out of 1",
    r"Safety check took [\d.]+s",
    r"Saved 1 image\(s\) as webp \(quality 80\) in \S+",
    r"Written output to: output\.0\.webp",
]


def unexpected(output: str, patterns: list[str]) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if line.strip() and not any(re.fullmatch(p, line) for p in patterns)
    ]


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_importing_the_model_code_and_building_a_tiny_model_print_nothing(tmp_path):
    modules = ["models.flux.engine", "models.sdxl.engine", "models.engine.fast",
               "models.train.loop", "models.serving.model", "diffusers", "peft",
               "torchao"]  # fmt: skip
    code = "; ".join(f"import {m}" for m in modules) + "; from diffusers import FluxPipeline"
    # A first run builds the tiny models (transformers draws progress bars when saving).
    code += (
        "; from dataclasses import replace; from pathlib import Path"
        "; from models.settings import load_settings; from models.weights.resolver import resolve"
        f"; resolve('tiny-flux-schnell', replace(load_settings(), weights_dir=Path('{tmp_path}')))"
    )
    done = run(sys.executable, "-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_the_checker_catches_a_line_it_does_not_expect():
    warning = "W1204 _pytree.py:630] <enum 'X'> is an Enum subclass ... deprecated"
    assert unexpected(f"Using seed: 1\n{warning}\n", TRAINING_LINES) == [warning]


@pytest.mark.slow
def test_train_help_and_a_two_step_training_print_only_our_lines(tmp_path):
    help_ = run(sys.executable, str(REPO_ROOT / "train.py"), "--help", cwd=tmp_path)
    assert help_.returncode == 0 and help_.stderr == ""
    assert help_.stdout.startswith("usage: train.py")
    with tarfile.open(tmp_path / "data.tar", "w") as tar:
        for index, colour in enumerate(["red", "blue"]):
            Image.new("RGB", (64, 64), colour).save(tmp_path / f"{index}.png")
            tar.add(tmp_path / f"{index}.png", arcname=f"{index}.png")
    done = run(sys.executable, str(REPO_ROOT / "train.py"), "--model", "tiny-flux-dev",
               "--input-images", "data.tar", "--steps", "2", "--resolution", "64",
               "--output", "lora.tar", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert unexpected(done.stdout + done.stderr, TRAINING_LINES) == []
    assert (tmp_path / "lora.tar").is_file()


@pytest.mark.server
def test_script_predict_prints_only_our_lines(tmp_path):
    done = script_predict(tmp_path, "--model", "tiny-flux-schnell", "-i", "prompt=a cat",
                          "-i", "num_inference_steps=1", "-i", "megapixels=0.25")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert unexpected(done.stdout + done.stderr, PREDICT_LINES) == []


@pytest.mark.server
@pytest.mark.parametrize("model", ["tiny-flux-schnell", "tiny-sdxl"])
def test_the_server_log_has_no_deprecation_and_no_library_warning(model, tmp_path):
    ref, env = model_ref(model)
    log_path = tmp_path / "server.log"
    with running(ref, env=env, log_path=log_path) as url:
        status, body = predict(url, {"prompt": "x", "num_inference_steps": 1, "seed": 1})
    assert status == 200 and body["status"] == "succeeded", body
    log = log_path.read_text()
    assert "Detected sync run()" in log  # the run() interface, not predict()
    assert [line for line in log.splitlines() if "deprecat" in line.lower()] == []
    # What the worker writes to stderr at setup is a library talking: none of it.
    assert [line for line in log.splitlines() if '"source":"Stderr"' in line] == []

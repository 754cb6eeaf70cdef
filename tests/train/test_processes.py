"""Training as a user runs it: the Cog train path through coglet (POST /trainings),
`accelerate launch` with two processes, and Ctrl-C leaving a usable checkpoint."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from models.settings import REPO_ROOT
from models.train import interrupt
from tests.train.helpers import dataset
from tools.server import free_port, http_json, running

pytestmark = [pytest.mark.server, pytest.mark.slow]
ARGS = ["--model", "tiny-flux-dev", "--trigger-word", "ZIKI", "--resolution", "64",
        "--seed", "5", "--no-autocaption", "--samples", "0", "--lora-rank", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("data") / "data.zip")


def _env(tmp_path) -> dict:
    # A private HOME and TMPDIR: the test checks nothing is written there.
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": str(REPO_ROOT), "WEIGHTS_DIR": str(REPO_ROOT / "weights")}  # fmt: skip


def _train(cwd, *args, launcher=(), env=None, **kw) -> subprocess.CompletedProcess:
    command = [*launcher, str(REPO_ROOT / "train.py"), *ARGS, *args]
    if not launcher:
        command.insert(0, sys.executable)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, **kw)  # fmt: skip


def test_two_processes_write_the_lora_of_one_process_with_the_same_global_batch(data, tmp_path):
    env = _env(tmp_path)
    common = ["--input-images", str(data), "--steps", "3", "--checkpoint-every", "0"]
    one = _train(tmp_path, *common, "--batch-size", "2", "--output", "one.tar", env=env)
    assert one.returncode == 0, one.stdout + one.stderr
    # On CPU, accelerate's --cpu launcher starts processes only through MPI; --multi_gpu
    # starts them with torch.distributed, and without CUDA they train on CPU (gloo).
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip
    two = _train(tmp_path, *common, "--batch-size", "1", "--output", "two.tar",
                 launcher=launcher, env=env)  # fmt: skip
    assert two.returncode == 0, two.stdout + two.stderr
    assert "global batch 2 (2 processes x batch_size 1)" in two.stdout
    a = load_file(tmp_path / "one-training" / "lora.safetensors")
    b = load_file(tmp_path / "two-training" / "lora.safetensors")
    assert a.keys() == b.keys()
    # Same samples, draws and averaged gradients; only float summation order differs
    # (measured: 2e-7). The trained up-projections are ~1e-2.
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5)
    assert max(a[k].abs().max() for k in a if "lora_B" in k) > 1e-3  # it did train
    # Nothing outside the output folders: no file in HOME or TMPDIR (torch's launcher
    # leaves empty scratch folders there).
    strays = [p for d in ("home", "tmp") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert not strays
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["home", "tmp", "one.tar", "one-training", "two.tar", "two-training"]
    )


def test_ctrl_c_leaves_the_last_checkpoint_usable(data, tmp_path):
    env = _env(tmp_path)
    command = [sys.executable, str(REPO_ROOT / "train.py"), *ARGS, "--input-images", str(data),
               "--steps", "5000", "--checkpoint-every", "2", "--output", "lora.tar"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    checkpoints = tmp_path / "lora-training" / "checkpoints"
    deadline = time.monotonic() + 300
    # Only the newest two checkpoints are kept: wait for any, not for one that may be gone.
    while not any(checkpoints.glob("step-*")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Ctrl-C: stopping after this step" in out
    assert "Interrupted at step" in out and "--resume" in out
    assert not (tmp_path / "lora.tar").exists()
    # However far it got before the signal landed, two steps remain to resume.
    newest = max(int(p.name.removeprefix("step-")) for p in checkpoints.glob("step-*"))
    resumed = _train(tmp_path, "--input-images", str(data), "--steps", str(newest + 2),
                     "--checkpoint-every", "2", "--output", "lora.tar",
                     "--resume", "lora-training", env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "Resuming from" in resumed.stdout
    with tarfile.open(tmp_path / "lora.tar") as t:
        assert "lora.safetensors" in t.getnames()


def test_ctrl_c_is_deferred_to_the_step_boundary_and_a_second_one_is_not():
    before = signal.getsignal(signal.SIGINT)
    with interrupt.deferred() as pressed:
        assert not pressed()
        os.kill(os.getpid(), signal.SIGINT)  # handled before the next bytecode
        time.sleep(0.01)
        assert pressed()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before
    answers = []

    def elsewhere():  # not the main thread: handlers can't be set, nothing changes
        with interrupt.deferred() as pressed:
            answers.append(pressed())

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert answers == [False] and signal.getsignal(signal.SIGINT) is before


def _post_training(url: str, inputs: dict):
    """POST /trainings; coglet answers 409 while the last job's slot is being released."""
    deadline = time.monotonic() + 60
    while True:
        status, body = http_json("POST", f"{url}/trainings", {"input": inputs})
        if status != 409 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


def test_cog_training_through_coglet_returns_the_tar(data):
    payload = base64.b64encode(data.read_bytes()).decode()
    inputs = {"input_images": f"data:application/zip;base64,{payload}", "steps": 2,
              "resolution": "64", "lora_rank": 4, "autocaption": False, "seed": 1}  # fmt: skip
    with running("predict.py:FluxDevPredictor", env={"MODEL_NAME": "tiny-flux-dev"},
                 train=True) as url:  # fmt: skip
        status, schema = http_json("GET", f"{url}/openapi.json")
        assert "/trainings" in schema["paths"] and "/predictions" in schema["paths"]
        status, body = _post_training(url, {**inputs, "steps": 0})
        assert status == 422 and body["detail"][0]["loc"][-1] == "steps"
        status, body = _post_training(url, inputs)
        assert status == 200 and body["status"] == "succeeded", body
        assert "step 2/2" in body["logs"]
        header, _, encoded = body["output"]["weights"].partition(",")
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded))) as t:
            assert {"lora.safetensors", "config.json"} <= set(t.getnames())
        status, body = _post_training(url, {**inputs, "resolution": "big"})
        assert body["status"] == "failed" and "resolution" in body["error"]

"""Run the real Cog HTTP server (coglet) locally, the way a `cog build` image does.

coglet validates inputs only against .cog/openapi_schema.json in its working
directory, so the schema is written from the predictor before every start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from models.specs import get_spec
from tools.schema import write_schema
from tools.select import TRAIN_REF

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 600.0):
    """(status, parsed JSON body). HTTP errors are answers here, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"error": raw.decode(errors="replace")}


def predict(base_url: str, inputs: dict, *, busy_wait: float = 60.0):
    """POST a prediction; (status, body). coglet answers 409 while the previous
    prediction's slot is still being released, so that is retried briefly."""
    deadline = time.monotonic() + busy_wait
    while True:
        status, body = http_json("POST", f"{base_url}/predictions", {"input": inputs})
        if status != 409 or time.monotonic() > deadline:
            return status, body
        time.sleep(0.1)


def model_ref(model: str) -> tuple[str, dict[str, str]]:
    """The predictor ref (relative to the repo) that serves `model`, and its environment."""
    spec = get_spec(model)
    return f"predict.py:{spec.predictor}", {"MODEL_NAME": spec.name}


def server_env(
    ref: str, port: int, *, extra: dict[str, str] | None, train: bool = False
) -> dict[str, str]:
    env = dict(os.environ)
    # coglet's worker runs `python` from PATH: it must be this interpreter.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PORT"] = str(port)
    env["PYTHONUNBUFFERED"] = "1"
    env["COG_TRAIN_TYPE_STUB" if train else "COG_PREDICT_TYPE_STUB"] = ref
    env.update(extra or {})
    return env


def command(host: str, *, train: bool = False) -> list[str]:
    mode = ["--x-mode", "train"] if train else []  # coglet serves POST /trainings
    return [sys.executable, "-m", "cog.server.http", "--host", host, *mode]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def wait_ready(base_url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Cog server exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            status, health = http_json("GET", f"{base_url}/health-check", timeout=5)
        except OSError:
            time.sleep(0.3)
            continue
        if health.get("status") == "READY":
            return health
        if health.get("status") in {"SETUP_FAILED", "DEFUNCT"}:
            logs = health.get("setup", {}).get("logs", "")
            raise RuntimeError(f"Predictor setup failed:\n{logs}\n{_tail(log_path)}")
        time.sleep(0.3)
    raise RuntimeError(f"Cog server not ready after {timeout:.0f}s:\n{_tail(log_path)}")


@contextmanager
def running(
    ref: str,
    *,
    root: Path = REPO,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 600.0,
    train: bool = False,
) -> Iterator[str]:
    """Start coglet for `ref` (a file in `root`), wait until READY, yield its base URL, stop
    it. Each run gets a private working folder holding its own .cog/openapi_schema.json,
    so servers of different models can run side by side. With `train`, coglet's train
    mode serves TRAIN_REF at POST /trainings, with the schema `cog build` writes for a
    cog.yaml holding both `predict:` and `train:`."""
    port = port or free_port()
    run_dir = Path(tempfile.mkdtemp(prefix="cog-run-"))
    write_schema(ref, root, into=run_dir, train_ref=TRAIN_REF if train else None)
    ref = TRAIN_REF if train else ref
    file, _, name = ref.partition(":")
    stub = f"{(Path(root) / file).resolve()}:{name}"
    pythonpath = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="cog-server-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command(host, train=train),
            cwd=run_dir,
            env=server_env(
                stub, port, extra={"PYTHONPATH": pythonpath, **(env or {})}, train=train
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so the worker subprocess stops with it
        )
    base_url = f"http://{host}:{port}"
    try:
        wait_ready(base_url, proc, log_path, ready_timeout)
        yield base_url
    finally:
        stop(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

"""Stopping by one rule: SIGTERM or Ctrl-C to script/serve lets running predictions
finish within SHUTDOWN_GRACE_S, cancels them after it, and every client hears the end."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import replace

import pytest

from models.flux.plan import FluxInputs
from models.serving import shutdown
from models.serving.model import DiffusionModel
from models.settings import REPO_ROOT
from models.specs import get_spec
from tools.server import free_port, http_json, predict, running

GRACE_S = 3.0
# A tiny-flux-dev prediction of about a minute on this machine: it always outlives the
# grace period. Steps take under a second each, so a cancelled one ends within seconds.
LONG = {"prompt": "x", "megapixels": "1", "num_outputs": 4, "num_inference_steps": 50}
SHORT = {"prompt": "x", "megapixels": "0.25", "num_inference_steps": 8}


def test_the_worker_refuses_new_work_and_cancels_overdue_steps(settings, tmp_path, monkeypatch):
    drain = tmp_path / "drain"
    model = DiffusionModel(get_spec("tiny-flux-schnell"), replace(settings, safety_checker=False))
    inputs = FluxInputs(prompt="x", megapixels="0.25", num_inference_steps=2)
    # Process-wide state, as in a worker: restored after the test. (A predictor's setup
    # elsewhere in this session may have set coglet's exception.)
    monkeypatch.setattr(shutdown, "_cancel_error", shutdown.ServerStopping)
    monkeypatch.setattr(shutdown, "_drain_file", drain)
    assert len(model.predict(inputs)) == 1  # no drain file: not stopping
    drain.write_text(repr(time.time() + 60))
    with pytest.raises(shutdown.ServerStopping, match="no new predictions"):
        model.predict(inputs)
    shutdown.cancel_if_overdue()  # within the grace period: carries on
    drain.write_text(repr(time.time() - 1))
    with pytest.raises(shutdown.ServerStopping, match="grace period"):
        shutdown.cancel_if_overdue()


class Webhooks:
    """A local receiver for a prediction's webhook calls."""

    def __init__(self):
        self.statuses: list[str] = []
        received = self.statuses

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append(body["status"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hook"

    def wait_for_terminal(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [s for s in self.statuses if s in {"succeeded", "failed", "canceled"}]
            if done:
                return done[0]
            time.sleep(0.1)
        return None


@pytest.fixture
def serve():
    """Start script/serve for tiny-flux-dev as a user would; yields (process, base URL)."""
    started = []

    def start():
        port = free_port()
        env = dict(os.environ, SHUTDOWN_GRACE_S=str(GRACE_S), SAFETY_CHECKER="0")
        proc = subprocess.Popen(
            [REPO_ROOT / "script" / "serve", "--model", "tiny-flux-dev", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http_json("GET", f"{url}/health-check", timeout=5)[1]["status"] == "READY":
                    return proc, url
            except OSError:
                pass
            time.sleep(0.3)
        proc.kill()
        pytest.fail(f"script/serve did not get ready:\n{proc.communicate()[0][-3000:]}")

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_busy(url: str) -> None:
    deadline = time.monotonic() + 60
    while http_json("GET", f"{url}/health-check")[1]["status"] != "BUSY":
        assert time.monotonic() < deadline, "the prediction never started"
        time.sleep(0.1)
    time.sleep(0.5)  # into its denoising steps


def in_background(fn):
    result = {}
    thread = threading.Thread(target=lambda: result.update(value=fn()), daemon=True)
    thread.start()
    return thread, result


def assert_exited_cleanly(proc: subprocess.Popen, within: float) -> str:
    output, _ = proc.communicate(timeout=within)
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return output


@pytest.mark.server
def test_sigterm_cancels_a_long_sync_prediction_after_the_grace_period(serve):
    proc, url = serve()
    thread, result = in_background(lambda: predict(url, LONG))
    wait_busy(url)
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    thread.join(timeout=GRACE_S + 20)
    answered_after = time.monotonic() - stopped_at
    status, body = result["value"]
    assert (status, body["status"]) == (200, "canceled"), body.get("error")
    assert GRACE_S <= answered_after < GRACE_S + 10, answered_after
    output = assert_exited_cleanly(proc, within=20)
    assert "Stopping: running predictions may finish within 3s" in output


@pytest.mark.server
def test_sigterm_lets_a_short_sync_prediction_finish(serve):
    proc, url = serve()
    thread, result = in_background(lambda: predict(url, SHORT))
    wait_busy(url)
    proc.send_signal(signal.SIGTERM)
    thread.join(timeout=GRACE_S + 20)
    status, body = result["value"]
    assert (status, body["status"]) == (200, "succeeded"), body.get("error")
    assert_exited_cleanly(proc, within=20)


@pytest.mark.server
def test_ctrl_c_cancels_an_async_prediction_and_its_webhook_says_so(serve):
    proc, url = serve()
    hooks = Webhooks()
    status, _ = predict(url, LONG, webhook=hooks.url)
    assert status == 202
    wait_busy(url)
    proc.send_signal(signal.SIGINT)
    assert hooks.wait_for_terminal(GRACE_S + 10) == "canceled", hooks.statuses
    output = assert_exited_cleanly(proc, within=20)
    assert output.rstrip().endswith("Stopped.")
    hooks.httpd.shutdown()


FAILING_SETUP = """
from cog import BaseRunner


class Predictor(BaseRunner):
    def setup(self):
        raise RuntimeError("setup failed on purpose")

    def run(self, prompt: str = "x") -> str:
        return prompt
"""


@pytest.mark.server
def test_a_server_that_fails_to_start_leaves_no_files(tmp_path, monkeypatch):
    project, scratch = tmp_path / "project", tmp_path / "tmp"
    project.mkdir()
    scratch.mkdir()
    (project / "predict.py").write_text(FAILING_SETUP)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    starting = running("predict.py:Predictor", root=project)
    with pytest.raises(RuntimeError, match="setup failed on purpose"), starting:
        pass
    assert list(scratch.iterdir()) == []  # neither its run folder nor a log


def test_a_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [REPO_ROOT / "script" / "serve", "--model", "tiny-flux-schnell", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr

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
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from models.serving import memory
from models.settings import load_settings
from models.specs import get_spec
from tools.schema import write_schema
from tools.select import TRAIN_REF

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(
    method: str,
    url: str,
    body: dict | None = None,
    timeout: float = 600.0,
    headers: dict[str, str] | None = None,
):
    """(status, parsed JSON body). HTTP errors are answers here, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
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


def predict(
    base_url: str,
    inputs: dict,
    *,
    webhook: str | None = None,
    busy_wait: float = 60.0,
    on_busy=None,
):
    """POST a prediction; (status, body). With `webhook`, asynchronously: coglet answers
    202 at once and reports to the webhook.

    coglet answers 409 "At capacity" while a prediction runs, and sometimes for a moment
    after one has ended, while it releases the slot: retried with a short backoff for up
    to `busy_wait` seconds. `on_busy()` is called on each 409."""
    body: dict = {"input": inputs}
    headers = {}
    if webhook is not None:
        body["webhook"] = webhook
        headers["Prefer"] = "respond-async"
    deadline = time.monotonic() + busy_wait
    pause = 0.05
    while True:
        status, answer = http_json("POST", f"{base_url}/predictions", body, headers=headers)
        if status != 409 or time.monotonic() > deadline:
            return status, answer
        if on_busy is not None:
            on_busy()
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


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
    for key, value in memory.ENVIRONMENT.items():
        env.setdefault(key, value)  # a value set by hand wins (script/bench compares them)
    env["COG_TRAIN_TYPE_STUB" if train else "COG_PREDICT_TYPE_STUB"] = ref
    env.update(extra or {})
    return env


def command(host: str, *, train: bool = False) -> list[str]:
    mode = ["--x-mode", "train"] if train else []  # coglet serves POST /trainings
    return [sys.executable, "-m", "cog.server.http", "--host", host, *mode]


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(the server's output is above)"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def wait_ready(
    base_url: str, proc: subprocess.Popen, log_path: Path | None, timeout: float | None
) -> dict:
    """Wait for READY (forever with timeout None); raise with the log's tail otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
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


class PortInUse(RuntimeError):
    pass


def check_port(host: str, port: int) -> None:
    """Fail with one clear line, before anything starts, when `port` is taken."""
    with socket.socket() as s:
        # As coglet binds: a port in TIME_WAIT after a previous server is free to use.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise PortInUse(
                f"Port {port} on {host} is already in use ({err.strerror}): stop the other "
                "server, or choose another port with --port."
            ) from None


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    # Written when the server is asked to stop: the worker's deadline (models/serving/shutdown.py).
    drain_file: Path
    # The worker's TMPDIR: its input downloads and outputs.
    tmp_dir: Path


@contextmanager
def started(
    ref: str,
    *,
    root: Path = REPO,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
    echo: bool = False,
    ready_timeout: float | None = 600.0,
    grace_s: float | None = None,
    train: bool = False,
) -> Iterator[Server]:
    """Start coglet for `ref` (a file in `root`), wait until READY, yield it, and stop it
    by the one rule of stop_gracefully(), whatever ends the block.

    Each run gets a private working folder holding its own .cog/openapi_schema.json (so
    servers of different models can run side by side), the worker's temporary files
    (inputs, outputs) and, unless `log_path` is given or `echo` sends the output to this
    process's, the server log: all of it is removed when the server stops. With `train`,
    coglet's train mode serves TRAIN_REF at POST /trainings, with the schema `cog build`
    writes for a cog.yaml holding both `run:` and `train:`."""
    port = port or free_port()
    check_port(host, port)
    grace_s = load_settings().shutdown_grace_s if grace_s is None else grace_s
    run_dir = Path(tempfile.mkdtemp(prefix="cog-run-"))
    try:
        write_schema(ref, root, into=run_dir, train_ref=TRAIN_REF if train else None)
        ref = TRAIN_REF if train else ref
        (run_dir / "tmp").mkdir()
        file, _, name = ref.partition(":")
        stub = f"{(Path(root) / file).resolve()}:{name}"
        pythonpath = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        drain_file = run_dir / "drain"
        extra = {
            "PYTHONPATH": pythonpath,
            "TMPDIR": str(run_dir / "tmp"),
            "DRAIN_FILE": str(drain_file),
            **(env or {}),
        }
        if log_path is None and not echo:
            log_path = run_dir / "server.log"
        with open(log_path, "wb") if log_path else nullcontext() as log_file:
            proc = subprocess.Popen(
                command(host, train=train),
                cwd=run_dir,
                env=server_env(stub, port, extra=extra, train=train),
                stdout=log_file,
                stderr=subprocess.STDOUT if log_file else None,
                # Its own process group: Ctrl-C in a terminal reaches only this process,
                # which applies the stopping rule; and the worker can be cleaned up with it.
                start_new_session=True,
            )
        server = Server(f"http://{host}:{port}", proc, drain_file, run_dir / "tmp")
        try:
            wait_ready(server.url, proc, log_path, ready_timeout)
            yield server
        finally:
            stop_gracefully(server, grace_s)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@contextmanager
def running(ref: str, **kwargs) -> Iterator[str]:
    """started(), yielding only the base URL."""
    with started(ref, **kwargs) as server:
        yield server.url


# After the deadline, a cancelled prediction ends at its next step; one that does not
# (stuck outside the denoising loop) is killed with the server this much later.
CANCEL_WAIT_S = 15.0


def stop_gracefully(server: Server, grace_s: float, say=None) -> None:
    """The one stopping rule, for every client: running predictions may finish within
    `grace_s`; past it the worker cancels them at their next step (models/serving/shutdown.py),
    so sync clients get a terminal status in their response and async ones in their
    webhook; new predictions are refused meanwhile. Then the server exits.

    A second SIGINT/SIGTERM while waiting (Ctrl-C again) ends the grace period at once."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline = time.time() + grace_s
    # Replaced, not rewritten: the worker never reads half a number.
    tmp = server.drain_file.with_suffix(".tmp")

    def set_deadline(when: float) -> None:
        tmp.write_text(repr(when))
        os.replace(tmp, server.drain_file)

    set_deadline(deadline)
    with _hurry_on_signals() as hurry:
        # coglet says BUSY for a moment after a prediction ends: not worth a line.
        announced, quiet_until = False, time.time() + 1.0
        while server.proc.poll() is None and _busy(server.url):
            if not announced and time.time() > quiet_until:
                say(
                    f"Stopping: running predictions may finish within {grace_s:g}s, then "
                    "they are cancelled (Ctrl-C again: cancel now)."
                )
                announced = True
            if hurry.is_set() and deadline > time.time():
                deadline = time.time()
                set_deadline(deadline)
            if time.time() > deadline + CANCEL_WAIT_S:
                say("Stopping: a prediction did not end after cancelling; stopping the server.")
                break
            time.sleep(0.1)
    stop(server.proc)


def _busy(base_url: str) -> bool:
    try:
        _, health = http_json("GET", f"{base_url}/health-check", timeout=5)
    except OSError:
        return False
    return health.get("status") == "BUSY"


@contextmanager
def _hurry_on_signals() -> Iterator[threading.Event]:
    hurry = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hurry  # signal handlers can only be set from the main thread
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: hurry.set()) for sig in signals}
    try:
        yield hurry
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to coglet, as Docker sends it; SIGKILL to its group if it hangs. The group
    is killed in any case: coglet 0.23.1 can leave its worker running after it exits."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

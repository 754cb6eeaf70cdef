"""One picture over two processes (models/serving/parallel.py), on this CPU over gloo:
diffusers' Ulysses context parallelism draws what one process draws, a cancelled request
stops in both, closing stops the helper, a helper that fails fails setup naming it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.flux.plan import FluxInputs
from models.serving import parallel, shutdown
from models.serving.model import DiffusionModel
from models.settings import REPO_ROOT
from models.specs import get_spec

REQUEST = FluxInputs(
    prompt="a cat", megapixels="0.25", num_inference_steps=4, seed=3, output_format="png"
)


def pixels(paths) -> np.ndarray:
    return np.asarray(Image.open(paths[0]), dtype=np.int16)


@pytest.fixture(scope="module")
def two(settings):
    spec = get_spec("tiny-flux-dev")
    model = DiffusionModel(spec, replace(settings, safety_checker=False, parallel="2"))
    yield model
    model.group.close()


@pytest.fixture(scope="module")
def one(settings):
    spec = get_spec("tiny-flux-dev")
    return DiffusionModel(spec, replace(settings, safety_checker=False, parallel="off"))


@pytest.mark.parametrize("step_cache", [False, True])
def test_two_processes_draw_what_one_draws(one, two, step_cache):
    request = replace(REQUEST, step_cache=step_cache, num_outputs=2)
    together, alone = pixels(two.predict(request)), pixels(one.predict(request))
    # The same computation split over two processes: float sums in another order.
    assert np.abs(together - alone).max() <= 1


def test_token_counts_that_do_not_divide_are_asked_to_split_unevenly(two):
    """A 400x400 picture has 25 x 25 = 625 image tokens: diffusers' "Ulysses anything"
    splits them unevenly. Its uneven all-gather needs NCCL (gloo's wants equal sizes), so
    on this CPU only the setting is checked; the drawing is for a GPU."""
    for model in filter(None, (two.engine.eager, getattr(two.engine.fast, "model", None))):
        assert model._parallel_config.context_parallel_config.ulysses_anything


def test_a_cancelled_request_stops_both_and_the_next_one_runs(two, monkeypatch):
    first = pixels(two.predict(REQUEST))
    calls = []

    def overdue():  # not stopping when the request starts, overdue at its first step
        calls.append(1)
        return None if len(calls) == 1 else 0.0

    monkeypatch.setattr(shutdown, "deadline", overdue)
    monkeypatch.setattr(shutdown, "_cancel_error", shutdown.ServerStopping)
    with pytest.raises(shutdown.ServerStopping):
        two.predict(REQUEST)
    monkeypatch.undo()
    # The helper stopped at the same step: the next request runs in step, as before.
    assert np.array_equal(pixels(two.predict(REQUEST)), first)


def test_coglets_cancel_in_the_middle_of_a_step_stops_both_at_the_next(two):
    """coglet cancels a sync prediction by raising CancelationException in its thread,
    wherever it is: rank 0 draws on another thread, so the helper is never left alone
    in the middle of a step, and the next request runs in step."""
    import ctypes
    import threading

    class Cancelled(BaseException):
        pass

    first = pixels(two.predict(REQUEST))
    waiting = threading.get_ident()

    def cancel_from_outside() -> None:  # as coglet does, into the predicting thread
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(waiting), ctypes.py_object(Cancelled)
        )

    timer = threading.Timer(0.2, cancel_from_outside)
    slow = replace(REQUEST, num_inference_steps=40)
    timer.start()
    with pytest.raises(Cancelled):
        two.predict(slow)
    timer.join()
    assert np.array_equal(pixels(two.predict(REQUEST)), first)


def test_closing_stops_the_helper(two):
    """Last of the tests on `two` (one process group per process, as in a Cog worker)."""
    (helper,) = two.group.helpers
    folder = two.group.folder
    two.group.close()
    assert helper.poll() == 0 and not folder.exists()


def test_a_helper_gone_between_requests_fails_the_next_one_naming_it(settings):
    spec = get_spec("tiny-flux-schnell")
    model = DiffusionModel(spec, replace(settings, safety_checker=False, parallel="2"))
    (helper,) = model.group.helpers
    helper.kill()
    helper.wait()
    with pytest.raises(RuntimeError, match="helper process rank 1 has exited"):
        model.predict(replace(REQUEST, step_cache=False, num_inference_steps=1))
    model.group.close()


def test_a_helper_that_fails_fails_setup_naming_the_fix(settings, monkeypatch):
    monkeypatch.setattr(parallel.sys, "executable", "/bin/false")
    spec = get_spec("tiny-flux-schnell")
    with pytest.raises(RuntimeError) as err:
        DiffusionModel(spec, replace(settings, safety_checker=False, parallel="2"))
    assert "helper process failed at setup" in str(err.value)
    assert "rank 1 exited" in str(err.value) and "PARALLEL=off" in str(err.value)


@pytest.mark.parametrize(
    "setting, device, family, expected",
    [("auto", "cpu", "flux", 1), ("off", "cuda", "flux", 1), ("2", "cpu", "flux", 2),
     ("4", "cuda", "sdxl", 1)],
)  # fmt: skip
def test_how_many_processes(setting, device, family, expected):
    assert parallel.world_size(setting, device, family) == expected


def test_the_helper_exits_when_the_worker_dies(tmp_path):
    """However the worker goes (here SIGKILL: no atexit), its helper does not outlive it."""

    script = (
        "from dataclasses import replace\n"
        "from models.serving.model import DiffusionModel\n"
        "from models.settings import load_settings\n"
        "from models.specs import get_spec\n"
        "settings = replace(load_settings(), safety_checker=False, parallel='2')\n"
        "model = DiffusionModel(get_spec('tiny-flux-schnell'), settings)\n"
        "print(model.group.helpers[0].pid, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    helper = int(worker.stdout.readline())
    worker.kill()
    worker.wait()

    def alive() -> bool:
        try:
            state = Path(f"/proc/{helper}/status").read_text()
        except FileNotFoundError:
            return False
        return "\nState:\tZ" not in state  # a zombie has exited

    deadline = time.monotonic() + 15
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive()
    with contextlib.suppress(ProcessLookupError):
        os.kill(helper, 9)

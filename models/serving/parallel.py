"""One picture on several GPUs: diffusers' context parallelism over torch.distributed.

With PARALLEL=auto and more than one visible GPU (or PARALLEL=N), setup starts one helper
process per further GPU. Every process loads the model on its own device and splits the
FLUX transformer's sequence of tokens with the others (Ulysses attention where the head
count divides by the number of processes, else ring attention), so each step costs
about 1/N of the attention and the MLPs. The Cog worker's process is rank 0: it plans
each request, sends the job to the helpers, and all run the same pipeline call in step;
only rank 0 writes and answers. Between steps rank 0 tells the helpers whether to go
on, so a cancelled request stops in every process; closing (or the worker's death) stops
the helpers; a helper that fails at setup fails the setup, naming it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch

from models.log import log
from models.settings import REPO_ROOT

# How long a process waits in a collective for the others: a step of a full FLUX at
# 1440x1440 on one GPU takes seconds, so a wait this long means a process has gone.
TIMEOUT = timedelta(minutes=5)
STOP = None  # the job that tells the helpers to exit


def world_size(setting: str, device: str, family: str) -> int:
    """How many processes draw one picture: PARALLEL=off 1, auto every visible GPU (one
    without several), N that many (on a CPU too: tests run 2 over gloo)."""
    if setting == "off" or family != "flux":
        if setting not in ("off", "auto"):
            log.info(f"PARALLEL={setting}: {family} has no context parallelism; one device")
        return 1
    if setting == "auto":
        count = torch.cuda.device_count() if device.startswith("cuda") else 1
        return max(1, count)
    return int(setting)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def join(rank: int, world: int, port: int, device: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(rank)
    torch.distributed.init_process_group(backend, rank=rank, world_size=world, timeout=TIMEOUT)


def exit_with_parent() -> None:
    """The helper exits when the worker that started it is gone, however it went (a
    watchdog thread: the helper may be waiting in a collective that never ends)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parallel-watchdog").start()


def parallelize(transformer: torch.nn.Module, world: int, device: str) -> str:
    """diffusers' context parallelism on `transformer` across the `world` processes:
    Ulysses when its heads divide among them, else ring (which needs an attention backend
    that returns the log-sum-exp: cuDNN's on a GPU)."""
    from diffusers import ContextParallelConfig

    heads = transformer.config.num_attention_heads
    # "anything": token counts that do not divide among the processes (a 400x400 picture
    # has 625 image tokens) are split unevenly, by an uneven all-gather that NCCL does and
    # gloo (the CPU tests) does not.
    if heads % world == 0:
        config = ContextParallelConfig(ulysses_degree=world, ulysses_anything=True)
        kind = "Ulysses"
    else:
        config, kind = ContextParallelConfig(ring_degree=world, ring_anything=True), "ring"
        transformer.set_attention_backend("_native_cudnn")
    with _cpu_as_one_device(device):
        transformer.enable_parallelism(config=config)
    return f"{kind} attention over {world} processes ({heads} heads)"


@contextlib.contextmanager
def _cpu_as_one_device(device: str):
    """diffusers 0.42.1's enable_parallelism picks rank % accelerator count for a device;
    a CPU (the tests, over gloo) has no accelerator: count it as one while it sets up."""
    if not device.startswith("cpu"):
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


class Group:
    """Rank 0's side: the helper processes, the job each request sends them, and the
    go-on flag between steps."""

    def __init__(self, world: int, device: str, spec_name: str, settings):
        """Start helpers 1..world-1 (`python -m models.serving.helper`, each writing how
        far it got to a status file), and join the process group as rank 0."""
        self.world, self.port = world, _free_port()
        self.cancelled: BaseException | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="parallel-"))
        (self.folder / "model.pickle").write_bytes(pickle.dumps((spec_name, settings)))
        self.helpers = [
            subprocess.Popen(
                [sys.executable, "-m", "models.serving.helper", str(rank), str(world),
                 str(self.port), device, str(self.folder)],
                cwd=REPO_ROOT,
            )
            for rank in range(1, world)
        ]  # fmt: skip
        atexit.register(self.close)
        self._wait_for("joining")
        try:
            join(0, world, self.port, device)
        except Exception as exc:
            self.close()
            raise RuntimeError(self._failed(f"joining the process group: {exc}")) from exc

    def wait_ready(self) -> None:
        """Every helper has its model on its device (called before the first collective
        of setup), or setup fails naming the one that does not."""
        self._wait_for("loaded")

    def _wait_for(self, stage: str, timeout: float = 3600) -> None:
        deadline = time.monotonic() + timeout
        for rank, process in enumerate(self.helpers, start=1):
            status = self.folder / f"rank-{rank}"
            while True:
                text = status.read_text() if status.is_file() else ""
                if text.startswith("error"):
                    self.close()
                    raise RuntimeError(self._failed(text.removeprefix("error: ")))
                if text in (stage, "loaded"):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(self._failed(f"rank {rank} exited before '{stage}'"))
                time.sleep(0.05)

    def _failed(self, what: str) -> str:
        return (
            f"PARALLEL: a helper process failed at setup ({what}). Each of the "
            f"{self.world} processes loads the model on its own GPU; run with PARALLEL=off "
            "to use one GPU."
        )

    def send(self, job, tokens) -> None:
        """The job every process runs next (rank 0 runs it itself)."""
        for rank, process in enumerate(self.helpers, start=1):
            if process.poll() is not None:
                raise RuntimeError(
                    f"PARALLEL: helper process rank {rank} has exited (code "
                    f"{process.returncode}), so this model cannot draw: restart the worker, "
                    "or run with PARALLEL=off."
                )
        torch.distributed.broadcast_object_list([(job, tokens)], src=0)

    def run(self, generate: Callable[[], list]) -> list:
        """`generate` on a thread of its own while this one waits: coglet cancels a sync
        prediction by raising CancelationException in its thread wherever it happens to
        be, which in the middle of a transformer call would leave the helpers waiting in
        a collective. Here it lands in the wait; the drawing thread stops at the next
        step, where every process stops with it, and the cancellation goes on up."""
        outcome: dict = {}
        done = threading.Event()

        def draw() -> None:
            try:
                outcome["images"] = generate()
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            finally:
                done.set()

        self.cancelled = None
        # Waiting on an Event, not Thread.join: an exception raised into join() marks the
        # thread as finished while it still runs (CPython's _wait_for_tstate_lock).
        try:
            threading.Thread(target=draw, name="parallel-rank-0").start()
            while not done.wait(0.05):
                pass
        except BaseException as cancel:
            self.cancelled = cancel
            while not done.wait(0.05):
                pass
            raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome["images"]

    def step_guard(self, on_step: Callable[[], None]) -> Callable[[], None]:
        """Rank 0's between-steps check, told to the helpers: they stop when it does."""

        def guarded() -> None:
            try:
                if self.cancelled is not None:
                    raise self.cancelled
                on_step()
            except BaseException:
                _tell(stop=True)
                raise
            _tell(stop=False)

        return guarded

    def close(self) -> None:
        """Tell the helpers to exit, and make sure they have."""
        if not self.helpers:
            return
        if torch.distributed.is_initialized():
            with contextlib.suppress(Exception):
                torch.distributed.broadcast_object_list([STOP], src=0)
        for process in self.helpers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.helpers = []
        if torch.distributed.is_initialized():
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()
        shutil.rmtree(self.folder, ignore_errors=True)


def _tell(*, stop: bool) -> None:
    flag = torch.tensor([1 if stop else 0])
    torch.distributed.broadcast(flag, src=0)


class Stopped(Exception):
    """Rank 0 stopped the request between steps; a helper waits for the next one."""


def follow_steps() -> None:
    """A helper's between-steps check: go on unless rank 0 stopped."""
    flag = torch.tensor([0])
    torch.distributed.broadcast(flag, src=0)
    if flag.item():
        raise Stopped()

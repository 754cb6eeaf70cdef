"""Ctrl-C during training stops at the next step boundary, never inside one.

Python's default SIGINT handling raises KeyboardInterrupt wherever the main thread is,
and one raised inside a finalizer or a library's cleanup is printed and dropped: the
run then goes on. Here the signal only sets a flag, which the loop reads once per step
(summed across processes, so all of them stop at the same step). A second Ctrl-C raises
KeyboardInterrupt at once, as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from models.log import log


@contextmanager
def deferred() -> Iterator[Callable[[], bool]]:
    """Yields a function telling whether Ctrl-C was pressed since entering. Signal
    handlers can only be set from the main thread; elsewhere (a server's worker
    thread) nothing changes and the function always answers False."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed = threading.Event()

    def handler(signum, frame):
        if pressed.is_set():
            raise KeyboardInterrupt
        pressed.set()
        log.info("Ctrl-C: stopping after this step (press it again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pressed.is_set
    finally:
        signal.signal(signal.SIGINT, previous)

"""Stopping within a grace period: the worker's side of tools/server.py's rule.

When the server is asked to stop (SIGTERM, Ctrl-C), tools/server.py writes the drain
file (Settings.drain_file) holding a deadline, and stops coglet only once nothing runs.
Until then this worker refuses new predictions, and a running one is cancelled at its
next denoising step once the deadline has passed: coglet is still up to report that as a
terminal status, in the sync response or the async webhook.

Process-wide on purpose, like the signals that start it: one worker, one server.
"""

from __future__ import annotations

import time
from pathlib import Path


class ServerStopping(RuntimeError):
    """The server is shutting down: a prediction was refused or cancelled."""


# Raised to cancel a running prediction. The Cog adapter replaces it with coglet's own
# cancellation exception, so that the prediction ends as "canceled", exactly as after
# POST /predictions/{id}/cancel.
_cancel_error: type[BaseException] = ServerStopping
_drain_file: Path | None = None


def configure(drain_file: Path | None) -> None:
    global _drain_file
    _drain_file = drain_file


def use_cancel_error(error: type[BaseException]) -> None:
    global _cancel_error
    _cancel_error = error


def deadline() -> float | None:
    """When running predictions must end (time.time()), or None while not stopping."""
    if _drain_file is None:
        return None
    try:
        return float(_drain_file.read_text())
    except (OSError, ValueError):  # not stopping, or the file is being replaced
        return None


def refuse_if_stopping() -> None:
    if deadline() is not None:
        raise ServerStopping(
            "The server is shutting down and takes no new predictions. Send the request "
            "again once it (or another instance) is back."
        )


def cancel_if_overdue() -> None:
    """Called between steps: cancel the prediction once the grace period is over."""
    end = deadline()
    if end is not None and time.time() > end:
        raise _cancel_error(
            "Cancelled: the server is shutting down and this prediction ran past the grace "
            "period (SHUTDOWN_GRACE_S). Send it again."
        )

"""One logger for the model code. The Cog adapter sends it to stdout, which
coglet records as the prediction's logs."""

import logging

log = logging.getLogger("models")


def to_stdout() -> None:
    """Send the model code's log to stdout, which coglet records as the job's logs."""
    import sys

    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)

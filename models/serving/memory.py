"""Why a serving process runs with one malloc arena (MALLOC_ARENA_MAX=1), and trims its
heap after each prediction.

coglet runs each prediction on whichever thread of its pool is free, and glibc gives
every thread its own malloc arena. Memory one prediction frees in its thread's arena is
not reused by the next prediction on another thread, so the worker's RSS kept growing
over hundreds of predictions without any object being kept alive (measured in
docs/benchmarks.md: the same predictions on one thread stay flat, and the Python object
count never changes). With one arena, freed memory is reused whatever thread asks;
predictions run one at a time, so threads do not contend for it.

glibc reads the variable when a process starts, and calling mallopt() from the worker
is too late (coglet's threads already have their arenas): tools/server.py sets it for
every local server, and tools/select.py writes it into cog.yaml for the image.
"""

import ctypes
import functools

ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}


@functools.cache
def _libc():
    """glibc, where this process runs on it (None elsewhere: musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc has it; others do not)
    except (OSError, AttributeError):
        return None
    return libc


def release_freed_memory() -> None:
    """Give the free pages at the top and in the middle of the heap back to the system
    (glibc's malloc_trim), after each prediction.

    With one arena, memory a prediction frees is reused by the next, but the heap keeps
    the high-water mark of the heaviest request so far: RSS rose in steps each time a new
    heaviest combination (batch, size, LoRAs, mode) first appeared, whatever the order.
    Trimming returns what the last prediction freed, so RSS follows what is in use
    (docs/benchmarks.md: the soak's curve with and without)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)

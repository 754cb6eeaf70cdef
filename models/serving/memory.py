"""Why a serving process runs with one malloc arena (MALLOC_ARENA_MAX=1).

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

ENVIRONMENT = {"MALLOC_ARENA_MAX": "1"}

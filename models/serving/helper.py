"""A helper process of models/serving/parallel.py: `python -m models.serving.helper RANK
WORLD PORT DEVICE FOLDER`, started by rank 0's Group, one per further GPU."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import torch

from models.log import log
from models.serving import parallel
from models.serving.memory import release_freed_memory
from models.serving.model import DiffusionModel
from models.specs import get_spec


def serve_helper(rank: int, world: int, port: int, device: str, folder: Path) -> None:
    """A helper's life: join, load the model as rank 0 does (then the same warm-up, in
    step), and run every job rank 0 sends until it says stop. Its status file says how far
    it got: joining, loaded, or error: what."""
    parallel.exit_with_parent()
    status = folder / f"rank-{rank}"
    spec_name, settings = pickle.loads((folder / "model.pickle").read_bytes())
    try:
        status.write_text("joining")
        parallel.join(rank, world, port, device)
        loaded = lambda: status.write_text("loaded")  # noqa: E731
        model = DiffusionModel(get_spec(spec_name), settings, rank=rank, loaded=loaded)
    except BaseException as exc:
        if status.read_text() != "loaded":
            status.write_text(f"error: rank {rank}: {type(exc).__name__}: {exc}")
        raise
    while True:
        payload = [None]
        torch.distributed.broadcast_object_list(payload, src=0)
        if payload[0] is parallel.STOP:
            break
        job, tokens = payload[0]
        try:
            model.engine.generate(job, tokens)
        except parallel.Stopped:
            pass
        except Exception as exc:  # rank 0 fails the same way and reports it
            log.info(f"PARALLEL rank {rank}: {type(exc).__name__}: {exc}")
        finally:
            release_freed_memory()  # as rank 0 does after each prediction
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, device, folder = sys.argv[1:6]
    serve_helper(int(rank), int(world), int(port), device, Path(folder))

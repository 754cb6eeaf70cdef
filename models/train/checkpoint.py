"""Resumable checkpoints: the LoRA weights, the optimizer state and the step, written
to a temporary folder and renamed into place, so an interrupted write (Ctrl-C, a full
disk, a killed job) never leaves a half checkpoint where a finished one is expected.

The data order and every random draw are functions of (seed, step) (models/train/
data.py), so a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.errors import InputError
from models.log import log

CHECKPOINTS = "checkpoints"
KEEP = 2  # the newest checkpoints kept; older ones are deleted as new ones land
_NAME = re.compile(r"^step-(\d+)$")


def save(out_dir: Path, step: int, lora: dict, optimizer_state: dict, state: dict) -> Path:
    root = out_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    staging = Path(tempfile.mkdtemp(prefix=f".step-{step:06d}-", dir=root))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in lora.items()},
                  str(staging / "lora.safetensors"))  # fmt: skip
        torch.save(optimizer_state, staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(_finished(root))[:-KEEP]:
        shutil.rmtree(old[1], ignore_errors=True)
    log.info(f"Saved checkpoint {final}")
    return final


def _finished(root: Path) -> list[tuple[int, Path]]:
    found = []
    for path in root.iterdir() if root.is_dir() else ():
        match = _NAME.match(path.name)
        if match and (path / "state.json").is_file():
            found.append((int(match.group(1)), path))
    return found


def find(path: Path) -> Path:
    """A checkpoint folder, or the newest one in an output folder (or its checkpoints/)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path / CHECKPOINTS, path):
        found = _finished(root)
        if found:
            return max(found)[1]
    raise InputError(
        f"resume: no checkpoint in {path}. Give the output folder of an earlier run "
        f"(it holds {CHECKPOINTS}/step-N) or one of its step-N folders."
    )


def load(path: Path) -> tuple[dict, dict, dict]:
    """(LoRA tensors, optimizer state, state.json) of a checkpoint folder."""
    try:
        state = json.loads((path / "state.json").read_text())
        lora = load_file(str(path / "lora.safetensors"))
        optimizer = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file of any kind: say which checkpoint
        raise InputError(f"resume: checkpoint {path} cannot be read ({err}).") from None
    return lora, optimizer, state


def restore(path: Path, model, optimizer, config, global_batch: int) -> int:
    """Load the newest checkpoint at `path` (a run's output folder, or one checkpoint) into
    the LoRA of `model` and `optimizer`; return its step. A checkpoint made with settings
    that change what training does (RESUME_KEYS, the global batch), or one with no step
    left, is refused naming the fix."""
    from peft.utils import set_peft_model_state_dict

    from models.train.config import RESUME_KEYS

    found = find(path)
    lora, optimizer_state, state = load(found)
    ours, theirs = config.to_json(), state["config"]
    differ = [k for k in RESUME_KEYS if ours[k] != theirs.get(k)]
    if state.get("global_batch") != global_batch:
        differ.append("global batch (batch_size x processes)")
    if differ:
        was = ", ".join(f"{k}={theirs.get(k)!r}" for k in differ if k in theirs)
        raise InputError(
            f"resume: {found} was trained with other settings ({', '.join(differ)}; it "
            f"had {was}). Resume with the same settings, or start a new run."
        )
    set_peft_model_state_dict(model, lora, adapter_name="default")
    optimizer.load_state_dict(optimizer_state)
    step = int(state["step"])
    if step >= config.steps:
        raise InputError(
            f"resume: {found} is at step {step}, and steps={config.steps}: nothing "
            "is left to train. Give a larger steps."
        )
    log.info(f"Resuming from {found} at step {step} of {config.steps}")
    return step

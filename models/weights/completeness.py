"""Is a weights folder whole? What a loadable copy needs, checked from the files alone.

A diffusers folder's model_index.json names its components; each model component (one
with a config.json) needs its weights: every shard its index lists, or at least one
weights file. A .safetensors file states the size of its data in its header, so a
truncated one is caught without reading it. A transformers model folder (config.json
at the top) is checked like one component.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_WEIGHTS = ("*.safetensors", "*.bin")


def missing_parts(folder: Path, borrowed: tuple[str, ...] = ()) -> list[str]:
    """What `folder` lacks, as readable phrases; empty when it is whole. Components in
    `borrowed` come from another folder at load time and are not checked."""
    index = folder / "model_index.json"
    if not index.is_file():
        return (
            _model_problems(folder, "the top level") if (folder / "config.json").is_file() else []
        )
    try:
        components = json.loads(index.read_text())
    except ValueError:
        return ["model_index.json is not valid JSON"]
    problems = []
    for name, value in components.items():
        listed = isinstance(value, list) and len(value) == 2 and value[0] is not None
        if name.startswith("_") or not listed or name in borrowed:
            continue
        part = folder / name
        if not part.is_dir() or not any(part.iterdir()):
            problems.append(f"{name}/ is missing")
        elif (part / "config.json").is_file():
            problems += _model_problems(part, f"{name}/")
    return problems


def _model_problems(folder: Path, where: str) -> list[str]:
    indexes = [p for pattern in ("*.safetensors.index*.json", "*.bin.index*.json")
               for p in folder.glob(pattern)]  # fmt: skip
    files: set[Path] = set()
    for index in indexes:
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            return [f"{where} {index.name} is not a valid weights index"]
        files |= {folder / shard for shard in shards}
    if not indexes:
        files = {p for pattern in _WEIGHTS for p in folder.glob(pattern)}
        if not files:
            return [f"{where} has no weights (.safetensors or .bin)"]
    problems = []
    for file in sorted(files):
        if not file.is_file():
            problems.append(f"{where} lacks {file.name}")
        elif file.suffix == ".safetensors":
            problems += [f"{where} {p}" for p in _safetensors_problems(file)]
    return problems


def _safetensors_problems(path: Path) -> list[str]:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size:
                raise ValueError
            header = json.loads(f.read(length))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    except (ValueError, struct.error, KeyError, TypeError):
        return [f"{path.name} has no readable header"]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return [f"{path.name} is truncated ({size} of {expected} bytes)"]
    return []

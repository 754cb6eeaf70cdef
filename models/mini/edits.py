"""Edits of the mini world, the mini Kontext's data: a scene, an instruction in one of four
forms, and the scene it asks for. Held-out edits start from scenes whose colour, shape
and background never appear together in training (models/mini/world.py split()).

    make the shape COLOUR | make the background COLOUR
    move the shape to the POSITION | turn the shape into a SHAPE
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import torch

from models.mini import judge
from models.mini.data import SIZES, to_tensor
from models.mini.world import COLOURS, POSITIONS, SHAPES, Scene, render, split

KINDS = ("colour", "background", "position", "shape")
# How often each kind is trained, relative to the others: a new shape in place of the old
# is the hardest edit (a model short of training draws a blend of the two), and the
# fewest training edits are of that kind.
KIND_WEIGHTS = (1, 1, 1, 3)


@dataclass(frozen=True)
class Edit:
    start: Scene
    kind: str  # one of KINDS: the attribute it changes
    target: str  # that attribute's new value

    @property
    def result(self) -> Scene:
        return replace(self.start, **{self.kind: self.target})

    @property
    def instruction(self) -> str:
        return {
            "colour": f"make the shape {self.target}",
            "background": f"make the background {self.target}",
            "position": f"move the shape to the {self.target}",
            "shape": f"turn the shape into a {self.target}",
        }[self.kind]


def edits_of(scene: Scene) -> list[Edit]:
    """Every edit of `scene` that gives a scene of the world (a shape never takes its
    background's colour)."""
    found = [Edit(scene, "colour", c) for c in COLOURS if c not in (scene.colour, scene.background)]
    found += [Edit(scene, "background", b) for b in COLOURS
              if b not in (scene.colour, scene.background)]  # fmt: skip
    found += [Edit(scene, "position", p) for p in POSITIONS if p != scene.position]
    found += [Edit(scene, "shape", s) for s in SHAPES if s != scene.shape]
    return found


def split_edits() -> tuple[list[Edit], list[Edit]]:
    """(training edits: start and result both training scenes, held-out edits: every edit
    of a held-out scene)."""
    train_scenes, held_scenes = split()
    trained = set(train_scenes)
    train = [e for s in train_scenes for e in edits_of(s) if e.result in trained]
    held = [e for s in held_scenes for e in edits_of(s)]
    return train, held


def held_out_sample(count: int, seed: int = 0) -> list[Edit]:
    """`count` held-out edits, the same for a seed, each kind equally often."""
    _, held = split_edits()
    rng = random.Random(seed)
    by_kind = {kind: [e for e in held if e.kind == kind] for kind in KINDS}
    return [rng.choice(by_kind[KINDS[i % len(KINDS)]]) for i in range(count)]


class EditBatches:
    """Pairs (picture before, picture after) of training edits at one of SIZES per batch,
    with the same jittered geometry in both pictures of a pair, each kind drawn as often
    as KIND_WEIGHTS says."""

    def __init__(self, seed: int, batch_size: int, edits: list[Edit] | None = None):
        self.rng = random.Random(seed)
        self.batch_size = batch_size
        self.edits = edits if edits is not None else split_edits()[0]
        self.by_kind = [[e for e in self.edits if e.kind == kind] for kind in KINDS]

    def next(self) -> tuple[list[Edit], torch.Tensor, torch.Tensor]:
        width, height = self.rng.choice(SIZES)
        kinds = self.rng.choices(self.by_kind, weights=KIND_WEIGHTS, k=self.batch_size)
        edits = [self.rng.choice(kind) for kind in kinds]
        starts, results = [], []
        for edit in edits:
            jitter = self.rng.getrandbits(32)
            starts.append(render(edit.start, width, height, rng=random.Random(jitter)))
            results.append(render(edit.result, width, height, rng=random.Random(jitter)))
        return edits, to_tensor(starts), to_tensor(results)


def score(pairs: list[tuple[Edit, object]]) -> dict[str, float]:
    """Over (edit, picture drawn): the share whose edited attribute reads as asked, and
    the share of the other attributes that read as before the edit."""
    edited = kept = 0
    for edit, image in pairs:
        matches = judge.read(image).matches(edit.result)
        edited += matches[edit.kind]
        kept += sum(ok for kind, ok in matches.items() if kind != edit.kind)
    return {"edited": edited / len(pairs), "kept": kept / (3 * len(pairs))}

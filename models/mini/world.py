"""The mini models' synthetic world: one flat shape on a flat background.

A scene is a shape colour, a shape (circle, square, triangle), a background colour and
a position; its prompt reads "a red circle on a blue background, at the left" (no
position phrase: centred). Everything here is deterministic for a seed, so the training
data, the held-out prompts and the tests that judge pictures (models/mini/judge.py) agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product

from PIL import Image, ImageDraw

# Saturated, far-apart colours: a blurry decoder still lands nearest the right one.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
# Never in the base training data: the LoRA tests teach it as a new concept.
NEW_COLOURS: dict[str, tuple[int, int, int]] = {"purple": (140, 40, 170)}
SHAPES = ("circle", "square", "triangle")
# Name -> centre as fractions of (width, height).
POSITIONS: dict[str, tuple[float, float]] = {
    "centre": (0.5, 0.5),
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
}
# The shape's size (circle diameter, square side, triangle base) as a share of the
# shorter image side.
SHAPE_SIZE = 0.4
# Words the mini tokenizers keep whole.
WORDS = (
    *COLOURS,
    *NEW_COLOURS,
    *SHAPES,
    *POSITIONS,
    "a",
    "on",
    "at",
    "the",
    "background",
)


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str
    position: str = "centre"

    @property
    def prompt(self) -> str:
        text = f"a {self.colour} {self.shape} on a {self.background} background"
        return text if self.position == "centre" else f"{text}, at the {self.position}"

    def with_background(self, background: str) -> Scene:
        return Scene(self.colour, self.shape, background, self.position)


def all_scenes() -> list[Scene]:
    """Every scene of the base world (a shape never has its background's colour)."""
    return [
        Scene(c, s, b, p) for c, b, s, p in product(COLOURS, COLOURS, SHAPES, POSITIONS) if c != b
    ]


def held_out_triples() -> set[tuple[str, str, str]]:
    """(colour, shape, background) triples never shown in training, at any position:
    every third colour pair with one shape. Each colour, shape and background on its
    own, and each colour pair, is still seen in training."""
    pairs = [(c, b) for c, b in product(COLOURS, COLOURS) if c != b]
    return {(c, SHAPES[i % 3], b) for i, (c, b) in enumerate(pairs) if i % 3 == 0}


def split() -> tuple[list[Scene], list[Scene]]:
    """(training scenes, held-out scenes)."""
    held = held_out_triples()
    train, test = [], []
    for scene in all_scenes():
        key = (scene.colour, scene.shape, scene.background)
        (test if key in held else train).append(scene)
    return train, test


def render(scene: Scene, width: int, height: int, *, rng: random.Random | None = None):
    """The scene as an RGB image. With `rng`, the size and centre jitter a little (the
    training data); without, the scene is drawn exactly (references for tests)."""
    jitter = (lambda spread: rng.uniform(-spread, spread)) if rng else (lambda spread: 0.0)
    scale = 4  # supersampled, then reduced: anti-aliased edges like a real picture's
    w, h = width * scale, height * scale
    image = Image.new("RGB", (w, h), _colour(scene.background))
    fx, fy = POSITIONS[scene.position]
    cx, cy = (fx + jitter(0.03)) * w, (fy + jitter(0.03)) * h
    r = SHAPE_SIZE * (1 + jitter(0.1)) * min(w, h) / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(image)
    fill = _colour(scene.colour)
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:  # apex up, base at the bottom of the box
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return image.resize((width, height), Image.Resampling.BOX)


def _colour(name: str) -> tuple[int, int, int]:
    """A colour's RGB, from its name or, for pictures that are not the world's own (the
    VAE's training data), "#rrggbb"."""
    if name.startswith("#"):
        return tuple(int(name[i : i + 2], 16) for i in (1, 3, 5))
    return COLOURS.get(name) or NEW_COLOURS[name]

"""Training batches of the mini world (models/mini/world.py) for script/train-mini: every
batch is drawn from one seeded generator, so a run is repeatable bit for bit."""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import replace

import numpy as np
import torch

from models.mini.world import Scene, render, split

# (width, height) of the training pictures: up to 128 px per side (the mini specs'
# max_native_side), at the aspect ratios of the size table, mostly the square 64 x 64.
SIZES = (
    (64, 64),
    (64, 64),
    (64, 64),
    (96, 96),
    (128, 128),
    (128, 80),
    (80, 128),
    (128, 96),
    (96, 128),
    (128, 64),
    (64, 128),
    (128, 48),
    (48, 128),
)


def to_tensor(images) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1], the VAE's input range."""
    arrays = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


class Batches:
    """Scenes of the training split at one of SIZES per batch, with jittered geometry.
    With `recolour`, that share of the scenes gets random colours instead of the
    world's (the VAE's data: so it can encode colours the world never names, which a
    LoRA may teach)."""

    def __init__(
        self, seed: int, batch_size: int, scenes: list[Scene] | None = None, recolour: float = 0.0
    ):
        self.rng = random.Random(seed)
        self.batch_size, self.recolour = batch_size, recolour
        self.scenes = scenes if scenes is not None else split()[0]

    def next(self) -> tuple[list[Scene], torch.Tensor]:
        width, height = self.rng.choice(SIZES)
        scenes = [self.rng.choice(self.scenes) for _ in range(self.batch_size)]
        if self.recolour:
            scenes = [self._recoloured(s) if self.rng.random() < self.recolour else s
                      for s in scenes]  # fmt: skip
        images = [render(s, width, height, rng=self.rng) for s in scenes]
        return scenes, to_tensor(images)

    def _recoloured(self, scene: Scene) -> Scene:
        def colour() -> str:
            return "#" + "".join(f"{self.rng.randrange(256):02x}" for _ in range(3))

        return replace(scene, colour=colour(), background=colour())


def flow_times(generator: torch.Generator, n: int, steps: int = 4) -> torch.Tensor:
    """Noise levels for rectified-flow training: 30% pure noise (t = 1, where the prompt
    alone must place the shape: the hardest level, and where sampling starts), 30% the
    other levels a `steps`-step sampler (shift 1, like schnell's) visits, 40% uniform."""
    uniform = torch.rand(n, generator=generator)
    visited = 1.0 - torch.randint(1, steps, (n,), generator=generator) / steps
    pick = torch.rand(n, generator=generator)
    return torch.where(pick < 0.3, 1.0, torch.where(pick < 0.6, visited, uniform))


def lr_schedule(optimiser, steps: int, warmup: int = 100):
    """Linear warm-up, then cosine decay to a tenth."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


class Progress:
    """Logs the mean loss of every 100 steps (and the last), with the time taken."""

    def __init__(self, name: str, steps: int, log):
        self.name, self.steps, self.log = name, steps, log
        self.started, self.total, self.count = time.perf_counter(), 0.0, 0

    def __call__(self, step: int, loss: float) -> None:
        self.total, self.count = self.total + loss, self.count + 1
        if step % 100 == 0 or step == self.steps:
            elapsed = time.perf_counter() - self.started
            mean = self.total / self.count
            self.log(f"{self.name} step {step}/{self.steps} loss {mean:.5f} ({elapsed:.0f}s)")
            self.total, self.count = 0.0, 0


class Fit:
    """What every mini training loop shares: AdamW with warm-up and cosine decay, gradient
    clipping, a moving average of the weights (decay 0.999, less early on: what the
    transformer/UNet ship with) and progress logging."""

    def __init__(
        self, model, *, steps: int, name: str, log, decay=0.01, clip=1.0, average=True, lr=1e-3
    ):
        self.model, self.clip = model, clip
        self.average = copy.deepcopy(model).requires_grad_(False) if average else None
        self.optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
        self.schedule = lr_schedule(self.optimiser, steps)
        self.progress = Progress(name, steps, log)
        model.train()

    def step(self, step: int, loss: torch.Tensor, shown: torch.Tensor | None = None) -> None:
        """One optimiser step on `loss`; `shown` is logged instead when given."""
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimiser.step()
        self.schedule.step()
        if self.average is not None:
            with torch.no_grad():
                decay = min(0.999, step / (step + 10))
                for kept, trained in zip(
                    self.average.parameters(), self.model.parameters(), strict=True
                ):
                    kept.lerp_(trained, 1 - decay)
        self.progress(step, (loss if shown is None else shown).item())

    def result(self):
        """The weights to ship, in eval mode."""
        return (self.model if self.average is None else self.average).eval()

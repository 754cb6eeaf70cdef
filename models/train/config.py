"""A training request as plain values, validated before any model is loaded.

`TrainInputs` holds what a user sets (train.py's Cog inputs and command-line flags have
the same names and defaults; tests/train/test_train.py checks they agree). `plan()`
turns it into a `TrainConfig` whose every value is final.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from models.errors import InputError, check_choice, check_range
from models.log import log
from models.request import checks
from models.specs import ModelSpec
from models.train.data import parse_resolutions

# The learning rate each family trains well at (flux-fine-tuner's and diffusers' SDXL
# LoRA example's defaults), used when the user gives none.
LEARNING_RATES = {"flux": 4e-4, "sdxl": 1e-4}
OPTIMIZERS = ("adamw", "adamw8bit")
# diffusers.training_utils' schemes for timestep density and loss weighting (FLUX).
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")


def _opt(help: str, **kw):
    return field(metadata={"help": help}, **kw)


@dataclass(frozen=True)
class TrainInputs:
    """What a user asks for. `input_images` is the only required value."""

    input_images: Path = _opt(
        "A .zip or .tar of images, with optional name.txt captions (Kontext: pairs "
        "name.png, name_start.png and name.txt, the instruction)."
    )
    trigger_word: str = _opt("Word that invokes what the LoRA learns.", default="TOK")
    steps: int = _opt("Optimizer steps.", default=1000)
    learning_rate: float | None = _opt("Learning rate; default FLUX 4e-4, SDXL 1e-4.", default=None)
    lora_rank: int = _opt("LoRA rank: higher learns more detail, files grow.", default=16)
    batch_size: int = _opt("Images per step on each process.", default=1)
    resolution: str = _opt(
        "Comma-separated bucket sizes, e.g. '512,768,1024'.", default="512,768,1024"
    )
    caption_dropout_rate: float = _opt("Share of steps that see an empty caption.", default=0.05)
    optimizer: str = _opt("adamw, or adamw8bit (bitsandbytes, CUDA only).", default="adamw")
    gradient_checkpointing: bool = _opt(
        "Recompute activations: less memory, slower.", default=False
    )
    cache_latents: bool = _opt("Encode every image once before training.", default=True)
    autocaption: bool = _opt("Caption images that have no .txt with the captioner.", default=True)
    seed: int | None = _opt("Random seed; random (and logged) when not given.", default=None)
    # Command-line only (train.py's Cog inputs leave them at their defaults).
    checkpoint_every: int = _opt(
        "Save a resumable checkpoint every N steps; 0: never.", default=250
    )
    samples: int = _opt("Sample images generated after training (0-4).", default=2)
    guidance: float = _opt("FLUX.1 [dev]'s guidance embedding while training.", default=3.5)
    weighting_scheme: str = _opt("FLUX timestep sampling/weighting scheme.", default="none")


@dataclass(frozen=True)
class TrainConfig:
    """Every value of a training run, final. Written to config.json and checkpoints."""

    model: str
    family: str
    trigger_word: str
    steps: int
    learning_rate: float
    lora_rank: int
    batch_size: int
    resolutions: tuple[int, ...]
    caption_dropout_rate: float
    optimizer: str
    gradient_checkpointing: bool
    cache_latents: bool
    autocaption: bool
    seed: int
    checkpoint_every: int
    samples: int
    guidance: float
    weighting_scheme: str

    def to_json(self) -> dict:
        return {**asdict(self), "resolutions": list(self.resolutions)}


# What must match between a checkpoint and the run that resumes it (steps may grow).
RESUME_KEYS = (
    "model", "lora_rank", "resolutions", "seed", "learning_rate", "optimizer",
    "caption_dropout_rate", "trigger_word", "guidance", "weighting_scheme",
)  # fmt: skip


def input_defaults() -> dict:
    """Each TrainInputs field's default (input_images has none)."""
    return {f.name: f.default for f in fields(TrainInputs) if f.name != "input_images"}


# Interfaces whose LoRAs are trained on dev (they share its layers): what each is called.
_NOT_TRAINED = {"flux-fill": "Fill", "flux-control": "Canny and Depth", "flux-redux": "Redux"}


def plan(spec: ModelSpec, inputs: TrainInputs) -> TrainConfig:
    if spec.interface in _NOT_TRAINED:
        raise InputError(
            f"{spec.name}: LoRA training for FLUX {_NOT_TRAINED[spec.interface]} is not "
            "offered. Train on flux-dev: it has dev's layers, and a dev LoRA loads into it "
            "with lora_weights."
        )
    check_range("steps", inputs.steps, 1, 100_000)
    check_range("lora_rank", inputs.lora_rank, 1, 256)
    check_range("batch_size", inputs.batch_size, 1, 64)
    check_range("caption_dropout_rate", inputs.caption_dropout_rate, 0.0, 1.0)
    check_range("checkpoint_every", inputs.checkpoint_every, 0, 100_000)
    check_range("samples", inputs.samples, 0, 4)
    check_range("guidance", inputs.guidance, 0.0, 10.0)
    check_choice("optimizer", inputs.optimizer, OPTIMIZERS)
    check_choice("weighting_scheme", inputs.weighting_scheme, WEIGHTING_SCHEMES)
    learning_rate = inputs.learning_rate
    if learning_rate is None:
        learning_rate = LEARNING_RATES[spec.family]
        log.info(f"learning_rate: {learning_rate:g}, the default for {spec.name}")
    check_range("learning_rate", learning_rate, 1e-7, 1e-1)
    trigger = inputs.trigger_word.strip()
    if len(trigger.split()) > 8:
        raise InputError(
            f"trigger_word={inputs.trigger_word!r} is a sentence; use one rare word or a "
            "short phrase (e.g. TOK), which is prepended to captions that lack it."
        )
    if spec.guidance is None and inputs.guidance != TrainInputs.guidance:
        log.info(f"guidance={inputs.guidance} is ignored: {spec.name} has no guidance embedding")
    return TrainConfig(
        model=spec.name,
        family=spec.family,
        trigger_word=trigger,
        steps=inputs.steps,
        learning_rate=learning_rate,
        lora_rank=inputs.lora_rank,
        batch_size=inputs.batch_size,
        resolutions=parse_resolutions(inputs.resolution),
        caption_dropout_rate=inputs.caption_dropout_rate,
        optimizer=inputs.optimizer,
        gradient_checkpointing=inputs.gradient_checkpointing,
        cache_latents=inputs.cache_latents,
        autocaption=inputs.autocaption,
        seed=checks.seed(inputs.seed),
        checkpoint_every=inputs.checkpoint_every,
        samples=inputs.samples,
        guidance=inputs.guidance if spec.guidance is not None else 0.0,
        weighting_scheme=inputs.weighting_scheme,
    )

"""Pieces every model family shares: seeds, devices, progress, input images, outputs,
loading weights into pipelines, and the setup-once/predict-many model."""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from models.errors import InputError, WeightsError, check_range
from models.imaging import load_image, load_mask, resize_image
from models.log import log
from models.outputs import save_images
from models.resolver import resolve, resolve_custom
from models.safety import SafetyChecker, filter_safe
from models.settings import Settings
from models.sizes import MAX_SIDE, size_for_image
from models.specs import ModelSpec

MAX_SEED = 2**32 - 1


@dataclass(frozen=True, kw_only=True)
class Job:
    """A fully decided generation: sizes, steps and seed are final. Families add fields."""

    prompt: str
    width: int
    height: int
    num_outputs: int
    steps: int
    guidance: float
    seed: int
    image: Image.Image | None = None
    mask: Image.Image | None = None
    strength: float = 1.0

    @property
    def mode(self) -> str:
        if self.image is None:
            return "txt2img"
        return "inpaint" if self.mask is not None else "img2img"


def resolve_seed(seed: int | None) -> int:
    if seed is None:
        seed = random.SystemRandom().randint(0, MAX_SEED)
    check_range("seed", seed, 0, MAX_SEED)
    log.info(f"Using seed: {seed}")
    return seed


def seeded_generator(seed: int) -> torch.Generator:
    # A CPU generator gives the same noise on every device for a seed.
    return torch.Generator("cpu").manual_seed(seed)


def pick_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def pick_dtype(spec_dtype: str, device: str) -> torch.dtype:
    # Half precision on CPU is slow and partly unsupported; CPU runs in float32.
    if device == "cpu":
        return torch.float32
    return getattr(torch, spec_dtype)


def step_logger():
    """A diffusers callback_on_step_end that logs progress instead of a tqdm bar."""

    def callback(pipe, step: int, timestep, callback_kwargs):
        total = getattr(pipe, "num_timesteps", None) or "?"
        log.info(f"Step {step + 1}/{total}")
        return {}

    return callback


def check_strength(prompt_strength: float, steps: int, steps_run: int) -> None:
    """With an image, a pipeline runs only part of the steps (`steps_run`, by its own
    rounding rule); none at all would return the input unchanged, silently."""
    check_range("prompt_strength", prompt_strength, 0.0, 1.0)
    if steps_run < 1:
        raise InputError(
            f"prompt_strength={prompt_strength} with num_inference_steps={steps} leaves no "
            "denoising step: an input image is changed for about prompt_strength x "
            "num_inference_steps steps. Raise prompt_strength or num_inference_steps."
        )


def load_init_images(
    image: Path | None,
    mask: Path | None,
    *,
    multiple: int,
    megapixels: str,
    max_side: int = MAX_SIDE,
) -> tuple[Image.Image | None, Image.Image | None]:
    """Read the optional input image and mask and bring them to a valid output size."""
    if mask is not None and image is None:
        raise InputError(
            "mask was given without image: inpainting needs both. Send `image` with `mask`, "
            "or leave out `mask`."
        )
    if image is None:
        return None, None
    picture = load_image(image, input_name="image")
    size = size_for_image(
        *picture.size, multiple=multiple, megapixels=megapixels, max_side=max_side
    )
    picture = resize_image(picture, size)
    return picture, (load_mask(mask, size, input_name="mask") if mask is not None else None)


def finish(
    images: list[Image.Image],
    *,
    safety: SafetyChecker | None,
    disable_safety_checker: bool,
    output_format: str,
    output_quality: int,
) -> list[Path]:
    """Drop unsafe images (unless disabled) and write the rest as out-<i>.<ext>."""
    checker = None if disable_safety_checker else safety
    if safety is None and not disable_safety_checker:
        log.info("Safety checker is not loaded in this deployment (SAFETY_CHECKER=0).")
    started = time.perf_counter()
    kept, indices = filter_safe(images, checker)
    if checker is not None:
        log.info(f"Safety check took {time.perf_counter() - started:.3f}s")
    return save_images(
        kept, output_format=output_format, output_quality=output_quality, indices=indices
    )


def load_safety(names: tuple[str, str], device: str, fetch) -> SafetyChecker:
    compvis, falcon = (fetch(name) for name in names)
    return SafetyChecker.load(compvis, falcon, device=device)


def main_weights(spec: ModelSpec, settings: Settings) -> tuple[Path, Path | None]:
    """The variant's main weights, or MODEL_WEIGHTS in their place, and for a single-file
    checkpoint the diffusers folder whose configs describe it (None: diffusers picks the
    base model its keys match and reads that model's configs from the Hugging Face hub)."""
    if not settings.model_weights:
        return resolve(spec.weights, settings), None
    path = resolve_custom(settings.model_weights, settings)
    log.info(f"Using MODEL_WEIGHTS={settings.model_weights} in place of {spec.weights}")
    if path.is_dir():
        return path, None
    if spec.single_file == "transformer":  # the other components come from the variant
        return path, resolve(spec.weights, settings)
    try:
        return path, resolve(spec.weights, settings, download=False)
    except WeightsError:
        return path, None


def _variant(folder: Path) -> str | None:
    # Hugging Face fp16 downloads hold only `*.fp16.safetensors`, which diffusers and
    # transformers load only when asked for that variant by name.
    return "fp16" if any(folder.glob("*/*.fp16.safetensors")) else None


class _NothingKeptInFloat32(logging.Filter):
    """diffusers warns "modules that should be kept in float32: []" on every cast of a
    model to a dtype (from_pipe, the SDXL VAE's upcast), even when the list is empty."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


def _quiet_loading() -> None:
    # Progress bars while loading would fill the setup logs with \r-updated lines.
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    modeling_log = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _NothingKeptInFloat32) for f in modeling_log.filters):
        modeling_log.addFilter(_NothingKeptInFloat32())


def load_pipeline(cls, weights: Path, *, dtype, device: str, config: Path | None = None, **kw):
    """A pipeline from a diffusers folder, or from one checkpoint file (fine-tunes are
    often shared that way) with `config` describing its components."""
    _quiet_loading()
    if weights.is_file():
        log.info(f"Loading single-file checkpoint {weights.name}")
        pipe = cls.from_single_file(
            str(weights), config=str(config) if config else None, dtype=dtype, **kw
        )
    else:
        pipe = cls.from_pretrained(weights, dtype=dtype, variant=_variant(weights), **kw)
    return pipe.to(device)


def derive_pipes(base, classes: dict, *, dtype, **kw) -> dict:
    """Pipelines of other modes sharing `base`'s components. from_pipe casts the shared
    components to its `dtype` argument, float32 unless given: passing the base's dtype
    keeps half-precision weights half-precision on a GPU."""
    pipes = {mode: cls.from_pipe(base, dtype=dtype, **kw) for mode, cls in classes.items()}
    for pipe in (base, *pipes.values()):
        pipe.set_progress_bar_config(disable=True)
    return pipes


class DiffusionModel:
    """What a predictor does, without Cog: setup once, predict many times.

    A family subclasses it with its `plan` function and `load_engine`; the engine's
    generate(job) returns PIL images, which are safety-checked and saved here.
    """

    plan = None  # staticmethod(plan) in a subclass: (spec, inputs) -> job
    inputs = None  # the family's inputs dataclass

    def __init__(self, spec: ModelSpec, settings: Settings):
        started = time.perf_counter()
        self.spec = spec
        device = pick_device(settings.device)

        def fetch(name: str) -> Path:
            return resolve(name, settings)

        weights, config = main_weights(spec, settings)
        self.engine = self.load_engine(weights, config, device, fetch)
        self.safety = load_safety(spec.safety, device, fetch) if settings.safety_checker else None
        self._last_outputs: Path | None = None
        log.info(f"Loaded {spec.name} on {device} in {time.perf_counter() - started:.1f}s")

    def load_engine(self, weights: Path, config: Path | None, device: str, fetch):
        raise NotImplementedError

    def predict(self, inputs) -> list[Path]:
        # One request at a time: by the next one, the server has sent the last one's files,
        # and a long-running server would otherwise fill its disk with them.
        if self._last_outputs is not None:
            shutil.rmtree(self._last_outputs, ignore_errors=True)
            self._last_outputs = None
        job = self.plan(self.spec, inputs)
        images = self.engine.generate(job)
        paths = finish(
            images,
            safety=self.safety,
            disable_safety_checker=inputs.disable_safety_checker,
            output_format=inputs.output_format,
            output_quality=inputs.output_quality,
        )
        self._last_outputs = paths[0].parent
        return paths

"""What every model family shares on the engine side: devices, loading weights into
pipelines, progress logging, finishing outputs, and the setup-once/predict-many model.
(What a request asks for is decided in models/requests.py, before any of this runs.)"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from models import shutdown
from models.errors import WeightsError
from models.fast import cache_path, load_compile_cache, plan_fast, save_compile_cache
from models.log import log
from models.lora import LoraStore
from models.lora_cache import LoraCache
from models.lora_sources import Hosts, Tokens
from models.outputs import save_images
from models.requests import at_native_size
from models.resolver import resolve, resolve_custom
from models.safety import SafetyChecker, filter_safe
from models.settings import Settings
from models.specs import ModelSpec


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
        shutdown.cancel_if_overdue()
        return {}

    return callback


def finish(
    images: list[Image.Image],
    *,
    safety: SafetyChecker | None,
    disable_safety_checker: bool,
    output_format: str,
    output_quality: int,
) -> list[Path]:
    """Drop unsafe images (unless disabled) and write the rest as out-<i>.<ext>. Encoding
    runs while the safety check does; files of images found unsafe are deleted before
    anything is returned."""
    checker = None if disable_safety_checker else safety
    if safety is None and not disable_safety_checker:
        log.info("Safety checker is not loaded in this deployment (SAFETY_CHECKER=0).")
    if checker is None:
        return save_images(images, output_format=output_format, output_quality=output_quality)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        verdict = pool.submit(filter_safe, images, checker)
        verdict.add_done_callback(
            lambda _: log.info(f"Safety check took {time.perf_counter() - started:.3f}s")
        )
        paths = save_images(images, output_format=output_format, output_quality=output_quality)
        try:
            _, kept = verdict.result()
        except BaseException:  # no image is safe: nothing of this request stays on disk
            shutil.rmtree(paths[0].parent, ignore_errors=True)
            raise
    for index, path in enumerate(paths):
        if index not in kept:
            path.unlink()
    return [paths[index] for index in kept]


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


def lora_store(settings: Settings) -> LoraStore:
    cache = LoraCache(settings.lora_cache_dir, int(settings.lora_cache_gb * 1e9))
    hosts = Hosts(settings.hf_endpoint, settings.civitai_endpoint, settings.replicate_endpoint)
    return LoraStore(cache, hosts)


class DiffusionModel:
    """What a predictor does, without Cog: setup once, predict many times.

    A family subclasses it with its `plan` function, `load_components` (also what
    train.py loads) and `engine` class; the engine's generate(job, tokens) returns PIL
    images, which are safety-checked and saved here.
    """

    plan = None  # staticmethod(plan) in a subclass: (spec, inputs) -> job
    inputs = None  # the family's inputs dataclass
    engine = None  # the family's engine class: (spec, components, device, ...) -> engine

    @classmethod
    def load_components(cls, spec: ModelSpec, settings: Settings, device: str, *, training=False):
        """The family's models, loaded once (MODEL_WEIGHTS honoured). `training` leaves out
        what only serving uses (SDXL's refiner)."""
        raise NotImplementedError

    def __init__(self, spec: ModelSpec, settings: Settings, *, components=None):
        """`components` replaces load_components (benchmarks build random full-size ones)."""
        started = time.perf_counter()
        self.spec, self.settings = spec, settings
        shutdown.configure(settings.drain_file)
        device = pick_device(settings.device)
        if components is None:
            components = self.load_components(spec, settings, device)
        self.engine = type(self).engine(
            spec,
            components,
            device,
            loras=lora_store(settings),
            max_loras=settings.lora_max_loaded,
            fast=plan_fast(settings.compile, settings.fp8, device),
            lora_target_rank=settings.lora_target_rank,
        )
        if self.engine.fast is not None and self.engine.fast_plan.compile:
            self.warm_up(
                cache_path(settings.compile_cache_dir, spec.name, self.engine.fast_plan, device)
            )
        fetch = lambda name: resolve(name, settings)  # noqa: E731
        self.safety = load_safety(spec.safety, device, fetch) if settings.safety_checker else None
        self._last_outputs: Path | None = None
        log.info(f"Loaded {spec.name} on {device} in {time.perf_counter() - started:.1f}s")

    def warm_up_inputs(self) -> list:
        """Requests that compile every graph variant the go_fast model needs."""
        raise NotImplementedError

    def warm_up(self, cache: Path) -> None:
        """Compile the go_fast model now (from the compile cache when present), with and
        without LoRA slots enabled, so no request pays for it."""
        load_compile_cache(cache)
        started = time.perf_counter()
        slot_passes = (False, True) if self.engine.fast.slots is not None else (False,)
        for inputs in self.warm_up_inputs():
            job = self.plan(self.spec, inputs)
            for idle in slot_passes:
                self.engine.generate(job, Tokens(), warm_slots=idle)
        log.info(f"go_fast warm-up took {time.perf_counter() - started:.1f}s")
        save_compile_cache(cache)

    def predict(self, inputs) -> list[Path]:
        # One request at a time: by the next one, the server has sent the last one's files,
        # and a long-running server would otherwise fill its disk with them.
        if self._last_outputs is not None:
            shutil.rmtree(self._last_outputs, ignore_errors=True)
            self._last_outputs = None
        shutdown.refuse_if_stopping()
        job, upscale = at_native_size(
            self.plan(self.spec, inputs), self.spec.max_native_side, self.spec.size_multiple
        )
        images = self.engine.generate(job, inputs.tokens())
        if upscale is not None:
            images = [image.resize(upscale, Image.Resampling.LANCZOS) for image in images]
        paths = finish(
            images,
            safety=self.safety,
            disable_safety_checker=inputs.disable_safety_checker,
            output_format=inputs.output_format,
            output_quality=inputs.output_quality,
        )
        self._last_outputs = paths[0].parent
        return paths

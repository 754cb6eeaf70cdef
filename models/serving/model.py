"""The setup-once/predict-many model a predictor serves, and finishing its outputs
(safety check, files). What a request asks for is decided before (models/request/), the
diffusers work is the family's engine (models/engine/, models/flux/, models/sdxl/)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from models.engine.extras import load_extras, load_safety
from models.engine.fast import cache_path, load_compile_cache, plan_fast, save_compile_cache
from models.engine.loading import pick_device
from models.log import log
from models.loras.fetch import LoraFetcher
from models.loras.source import Tokens
from models.request.job import at_native_size
from models.request.outputs import save_images
from models.request.safety import SafetyChecker, filter_safe
from models.serving import parallel, shutdown
from models.serving.families import FAMILIES
from models.serving.memory import release_freed_memory
from models.settings import Settings
from models.specs import ModelSpec


def finish(
    images: list[Image.Image],
    *,
    safety: SafetyChecker | None,
    disable_safety_checker: bool,
    output_format: str,
    output_quality: int,
    unchecked: int = 0,
) -> list[Path]:
    """Drop unsafe images (unless disabled) and write the rest as out-<i>.<ext>. Encoding
    runs while the safety check does; files of images found unsafe are deleted before
    anything is returned. The last `unchecked` images (pictures made from the user's own
    input: a control map) are written and kept without a check, once a generated one is."""
    checker = None if disable_safety_checker else safety
    if safety is None and not disable_safety_checker:
        log.info("Safety checker is not loaded in this deployment (SAFETY_CHECKER=0).")
    if checker is None:
        return save_images(images, output_format=output_format, output_quality=output_quality)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.perf_counter()
        generated = images[: len(images) - unchecked]
        verdict = pool.submit(filter_safe, generated, checker)
        verdict.add_done_callback(
            lambda _: log.info(f"Safety check took {time.perf_counter() - started:.3f}s")
        )
        paths = save_images(images, output_format=output_format, output_quality=output_quality)
        try:
            kept = [*verdict.result(), *range(len(generated), len(images))]
        except BaseException:  # no image is safe: nothing of this request stays on disk
            shutil.rmtree(paths[0].parent, ignore_errors=True)
            raise
    for index, path in enumerate(paths):
        if index not in kept:
            path.unlink()
    return [paths[index] for index in kept]


class DiffusionModel:
    """What a predictor does, without Cog: setup once, predict many times.

    The spec's family (models/serving/families.py) gives the inputs, plan(), components
    and engine; the engine's generate(job, tokens) returns PIL images, which are
    safety-checked and saved here.
    """

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        *,
        components=None,
        extras=None,
        rank: int = 0,
        loaded: Callable[[], None] | None = None,
    ):
        """`components` replaces the family's load_components and `extras` the models the
        spec loads beside them (benchmarks build random full-size ones). `rank` > 0: a
        helper process of models/serving/parallel.py, which calls `loaded` once its model
        is on its device."""
        started = time.perf_counter()
        self.spec, self.settings = spec, settings
        self.family = FAMILIES[spec.interface]
        shutdown.configure(settings.drain_file)
        device = pick_device(settings.device)
        world = parallel.world_size(settings.parallel, device, spec.family)
        if world > 1 and components is not None:
            log.info("PARALLEL: components built in this process (benchmarks): one device")
            world = 1
        self.group = None
        on_step = shutdown.cancel_if_overdue if rank == 0 else parallel.follow_steps
        if world > 1 and rank == 0:
            self.group = parallel.Group(world, device, spec.name, settings)
            on_step = self.group.step_guard(on_step)
            loaded = self.group.wait_ready
        if world > 1 and rank > 0:
            device = f"{device}:{rank}" if device.startswith("cuda") else device
        if components is None:
            components = self.family.load_components(spec, settings, device)
        if extras is None:
            extras = load_extras(spec.extras, settings, device)
        self.engine = self.family.engine(
            spec,
            components,
            device,
            loras=LoraFetcher.from_settings(settings),
            max_loras=settings.lora_max_loaded,
            fast=plan_fast(settings.compile, settings.fp8, device),
            lora_target_rank=settings.lora_target_rank,
            on_step=on_step,
            extras=extras,
        )
        if world > 1:
            loaded()  # every process has its model: the collectives can start
            how = [parallel.parallelize(self.engine.eager, world, device)]
            if self.engine.fast is not None:
                how.append(parallel.parallelize(self.engine.fast.model, world, device))
            log.info(f"PARALLEL: rank {rank}, {how[0]}")
        if self.engine.fast is not None and self.engine.fast_plan.compile:
            self.warm_up(
                cache_path(settings.compile_cache_dir, spec.name, self.engine.fast_plan, device)
            )
        # Helpers only draw: rank 0 checks and writes.
        self.safety = load_safety(spec, settings, device) if rank == 0 else None
        self._last_outputs: Path | None = None
        log.info(f"Loaded {spec.name} on {device} in {time.perf_counter() - started:.1f}s")

    @property
    def inputs(self) -> type:
        """The family's plain inputs dataclass."""
        return self.family.inputs

    def plan(self, spec: ModelSpec, inputs):
        """The family's plan(): inputs, validated, into a job."""
        return self.family.plan(spec, inputs)

    def warm_up(self, cache: Path) -> None:
        """Compile the go_fast model now (from the compile cache when present), with and
        without LoRA slots enabled, so no request pays for it."""
        load_compile_cache(cache)
        started = time.perf_counter()
        slot_passes = (False, True) if self.engine.fast.slots is not None else (False,)
        for inputs in self.family.warm_up_requests(self.spec):
            job = self.plan(self.spec, inputs)
            for idle in slot_passes:
                self.engine.generate(job, Tokens(), warm_slots=idle)
        log.info(f"go_fast warm-up took {time.perf_counter() - started:.1f}s")
        save_compile_cache(cache)

    def predict(self, inputs) -> list[Path]:
        try:
            return self._predict(inputs)
        finally:
            release_freed_memory()

    def _predict(self, inputs) -> list[Path]:
        # One request at a time: by the next one, the server has sent the last one's files,
        # and a long-running server would otherwise fill its disk with them.
        if self._last_outputs is not None:
            shutil.rmtree(self._last_outputs, ignore_errors=True)
            self._last_outputs = None
        shutdown.refuse_if_stopping()
        job, upscale = at_native_size(
            self.plan(self.spec, inputs), self.spec.max_native_side, self.spec.size_multiple
        )
        if self.group is None:
            images = self.engine.generate(job, inputs.tokens())
        else:
            self.group.send(job, inputs.tokens())
            images = self.group.run(lambda: self.engine.generate(job, inputs.tokens()))
        if upscale is not None:
            images = [image.resize(upscale, Image.Resampling.LANCZOS) for image in images]
        paths = finish(
            images,
            safety=self.safety,
            disable_safety_checker=inputs.disable_safety_checker,
            output_format=inputs.output_format,
            output_quality=inputs.output_quality,
            unchecked=len(job.returned),
        )
        self._last_outputs = paths[0].parent
        return paths

"""The engine contract every family follows: mode pipelines over one set of components
(the spec's `pipelines`), the go_fast copy of the transformer/UNet with its own mode
pipelines, the LoRA adapters, the one per-request context that sets and restores all of
it, and generate(), which runs a job's stages in it.

A family's engine says what is its own: the denoiser's name, what a LoRA may change, the
diffusers arguments of each mode (call_args), and, where it has them, extra stages
(SDXL's refiner), a scheduler per request, checks that need the loaded models, and model
work a job needs before its steps (prepare: a control map, Redux's embeddings).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from types import MappingProxyType
from typing import Any

import torch
from PIL import Image

from models.engine import loading
from models.engine.caching import StepCache, remove_step_cache
from models.engine.fast import FastDenoiser, FastPlan
from models.errors import InputError
from models.log import log
from models.loras.adapters import Adapters
from models.loras.fetch import LoraFetcher
from models.loras.source import Tokens
from models.request.job import Job, seeded_generator
from models.specs import ModelSpec


def step_logger(on_step: Callable[[], None] = lambda: None):
    """A diffusers callback_on_step_end that logs progress instead of a tqdm bar, and
    calls `on_step` between steps (the server uses it to cancel when stopping)."""

    def callback(pipe, step: int, timestep, callback_kwargs):
        total = getattr(pipe, "num_timesteps", None) or "?"
        log.info(f"Step {step + 1}/{total}")
        on_step()
        return {}

    return callback


class Engine:
    denoiser = "transformer"  # the component go_fast copies ("unet" for SDXL)
    lora_components: tuple[str, ...] = ()  # what a LoRA may change, the denoiser first
    # from_pipe keyword arguments every derived pipeline gets (read-only: one per class).
    pipeline_kwargs: Mapping[str, Any] = MappingProxyType({})

    def __init__(
        self,
        spec: ModelSpec,
        base,
        device: str,
        *,
        loras: LoraFetcher,
        max_loras: int = 8,
        fast: FastPlan | None = None,
        lora_target_rank: int = 0,
        on_step: Callable[[], None] = lambda: None,
        extras: Mapping[str, Any] | None = None,
    ):
        """`base` is the pipeline of the spec's first mode, holding every component;
        `extras` what models/engine/extras.py loaded for the spec's `extras` entries."""
        self.spec, self.device, self.on_step = spec, device, on_step
        self.extras = MappingProxyType(dict(extras or {}))
        self.eager = eager = getattr(base, self.denoiser)
        # from_pipe casts what it shares to its dtype argument (float32 unless given).
        self.dtype = eager.dtype
        self.pipes = self._modes(base)
        self.adapters = Adapters(
            base, spec.family, self.lora_components, loras, max_loaded=max_loras
        )
        self.fast_plan = fast or FastPlan(compile=False, fp8=None, why="not set up")
        self.fast: FastDenoiser | None = None
        self.fast_pipes: dict = {}
        # The go_fast copy is made of the bare model (another engine on these components,
        # as in benchmarks, may have left a step cache on it).
        remove_step_cache(eager)
        if self.fast_plan.active:
            self.fast = FastDenoiser(
                eager,
                self.fast_plan,
                keep=spec.fp8_keep,
                target_rank=lora_target_rank,
                step_cache=spec.step_cache,
            )
            swap = {self.denoiser: self.fast.model}
            fast_base = type(base).from_pipe(base, dtype=self.dtype, **self.pipeline_kwargs, **swap)
            self.fast_pipes = self._modes(fast_base)
        # Hooked per request that asks for it (the go_fast copy has its own, permanent).
        self.step_cache = StepCache(eager, permanent=False) if spec.step_cache else None

    def _modes(self, base) -> dict:
        import diffusers

        first, *others = self.spec.pipelines
        classes = {mode: getattr(diffusers, name) for mode, name in others}
        derived = loading.derive_pipes(base, classes, dtype=self.dtype, **self.pipeline_kwargs)
        return {first[0]: base, **derived}

    # What a family's engine says about itself.

    def call_args(self, job: Job, generator: torch.Generator, stage: int = 0, previous=None):
        """The diffusers call's arguments for `stage` of `job` (progress logging aside);
        `previous` is the output of the stage before."""
        raise NotImplementedError

    def stages(self, job: Job, pipe) -> list:
        """The pipelines a job runs, in turn: its mode's pipeline, and any that refine it."""
        return [pipe]

    def scheduler_for(self, job: Job, pipe):
        """A fresh scheduler for `pipe` during `job`, or None to keep its own."""
        return None

    def check(self, job: Job) -> None:
        """Refuse, before any step, a job whose inputs only the loaded models can judge."""

    def prepare(self, job: Job) -> tuple[Job, dict]:
        """Model work `job` needs before its steps, run inside its request (LoRAs active):
        the job with its conditioning final, and diffusers arguments to add to every
        stage's call_args (they win over them)."""
        return job, {}

    def describe(self, job: Job) -> str:
        return f"Mode: {job.mode}, {job.width}x{job.height}, {job.steps} steps"

    # The same for every family.

    @contextmanager
    def request(self, job: Job, tokens: Tokens, *, warm_slots: bool = False) -> Iterator[list]:
        """The one place per-request state is set on the shared components and restored,
        whatever happens: the go_fast path, LoRA adapters at their scales (on the eager
        model and text encoders, and copied into the go_fast model's slots), the step
        cache and the schedulers. Yields the job's stages (stages()). `warm_slots` runs the slots at
        scale 0 (warm-up)."""
        fast = self.fast if job.go_fast else None
        if job.go_fast:
            log.info(f"go_fast: {self.fast_plan.describe()}")
        else:
            log.info(f"go_fast=false: eager {str(self.dtype).removeprefix('torch.')} model")
        with self.adapters.active(job.loras, tokens, job.prompt) as active:
            slots = fast.slots if fast is not None else None
            if fast is not None and active:
                self._check_slots(slots, active, job)
            in_slots = slots.active(active, self.eager, idle=warm_slots) if slots else nullcontext()
            cache = fast.step_cache if fast is not None else self.step_cache
            cached = cache.active(job.step_cache, job.denoising_calls) if cache else nullcontext()
            with in_slots, cached:
                pipes = self.stages(job, (self.fast_pipes if fast else self.pipes)[job.mode])
                originals = [pipe.scheduler for pipe in pipes]
                try:
                    for pipe in pipes:
                        pipe.scheduler = self.scheduler_for(job, pipe) or pipe.scheduler
                    yield pipes
                finally:
                    for pipe, original in zip(pipes, originals, strict=True):
                        pipe.scheduler = original

    def generate(
        self, job: Job, tokens: Tokens = Tokens(), *, warm_slots: bool = False
    ) -> list[Image.Image]:
        """Run `job`: each stage's pipeline in turn, the next fed the last one's output. The
        generated pictures come first, then the conditioning pictures `job.returned` names."""
        log.info(self.describe(job))
        self.check(job)
        generator = seeded_generator(job.seed)
        progress = step_logger(self.on_step)
        with self.request(job, tokens, warm_slots=warm_slots) as pipes, torch.inference_mode():
            job, extra = self.prepare(job)
            output = None
            for stage, pipe in enumerate(pipes):
                args = {**self.call_args(job, generator, stage, output), **extra}
                output = pipe(**args, callback_on_step_end=progress).images
            return [*output, *(job.conditioning[name] for name in job.returned)]

    def _check_slots(self, slots, active, job: Job) -> None:
        for (name, _), request in zip(active, job.loras, strict=True):
            where = request.source.input_name
            if slots is None:
                raise InputError(
                    f"{where}: this deployment's go_fast model has no LoRA slots "
                    "(LORA_TARGET_RANK=0). Run it with go_fast=false."
                )
            slots.check(name, self.eager, where)

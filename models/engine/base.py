"""What the FLUX and SDXL engines share: mode pipelines over one set of components, the
go_fast copy of the transformer/UNet with its own mode pipelines, the LoRA adapters, and
the one per-request context that sets and restores all of it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from models.engine import loading
from models.engine.fast import FastDenoiser, FastPlan
from models.errors import InputError
from models.log import log
from models.loras.adapters import Adapters, LoraStore
from models.loras.sources import Tokens
from models.request.job import Job
from models.serving import shutdown
from models.specs import ModelSpec


def step_logger():
    """A diffusers callback_on_step_end that logs progress instead of a tqdm bar."""

    def callback(pipe, step: int, timestep, callback_kwargs):
        total = getattr(pipe, "num_timesteps", None) or "?"
        log.info(f"Step {step + 1}/{total}")
        shutdown.cancel_if_overdue()
        return {}

    return callback


class Engine:
    denoiser = "transformer"  # the component go_fast copies ("unet" for SDXL)
    lora_components: tuple[str, ...] = ()  # what a LoRA may change, the denoiser first
    extra: dict = {}  # from_pipe keyword arguments every derived pipeline gets

    def mode_classes(self) -> dict:
        """Pipeline classes of the modes derived from the base (txt2img) pipeline."""
        raise NotImplementedError

    def __init__(
        self,
        spec: ModelSpec,
        base,
        device: str,
        *,
        loras: LoraStore,
        max_loras: int = 8,
        fast: FastPlan | None = None,
        lora_target_rank: int = 0,
    ):
        self.spec, self.device = spec, device
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
        if self.fast_plan.active:
            self.fast = FastDenoiser(
                eager, self.fast_plan, keep=spec.fp8_keep, target_rank=lora_target_rank
            )
            swap = {self.denoiser: self.fast.model}
            fast_base = type(base).from_pipe(base, dtype=self.dtype, **self.extra, **swap)
            self.fast_pipes = self._modes(fast_base)

    def _modes(self, base) -> dict:
        derived = loading.derive_pipes(base, self.mode_classes(), dtype=self.dtype, **self.extra)
        return {"txt2img": base, **derived}

    @contextmanager
    def request(self, job: Job, tokens: Tokens, *, warm_slots: bool = False) -> Iterator:
        """The one place per-request state is set on the shared components and restored,
        whatever happens: the go_fast path, and LoRA adapters at their scales (on the
        eager model and text encoders, and copied into the go_fast model's slots).
        Yields the job's mode pipeline. `warm_slots` runs the slots at scale 0 (warm-up)."""
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
            with in_slots:
                yield (self.fast_pipes if fast is not None else self.pipes)[job.mode]

    def _check_slots(self, slots, active, job: Job) -> None:
        for (name, _), request in zip(active, job.loras, strict=True):
            where = request.source.input_name
            if slots is None:
                raise InputError(
                    f"{where}: this deployment's go_fast model has no LoRA slots "
                    "(LORA_TARGET_RANK=0). Run it with go_fast=false."
                )
            slots.check(name, self.eager, where)

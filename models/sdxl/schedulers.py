"""SDXL's `scheduler` input: each choice's diffusers class and its overrides of the
weights' own scheduler config. A request gets a fresh scheduler of its choice."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SchedulerChoice:
    """A `scheduler` input's diffusers class, and its overrides of the weights' config."""

    class_name: str
    overrides: tuple[tuple[str, object], ...] = ()


SCHEDULERS: dict[str, SchedulerChoice] = {
    "DDIM": SchedulerChoice("DDIMScheduler"),
    "DPMSolverMultistep": SchedulerChoice("DPMSolverMultistepScheduler"),
    "HeunDiscrete": SchedulerChoice("HeunDiscreteScheduler"),
    "KarrasDPM": SchedulerChoice("DPMSolverMultistepScheduler", (("use_karras_sigmas", True),)),
    "K_EULER_ANCESTRAL": SchedulerChoice("EulerAncestralDiscreteScheduler"),
    "K_EULER": SchedulerChoice("EulerDiscreteScheduler"),
    # Without skip_prk_steps, PNDM's Runge-Kutta warm-up needs more than 3 steps.
    "PNDM": SchedulerChoice("PNDMScheduler", (("skip_prk_steps", True),)),
}


def make_scheduler(choice: SchedulerChoice, config):
    """A fresh scheduler of the request's choice (resolved by plan()) from `config`."""
    import diffusers

    return getattr(diffusers, choice.class_name).from_config(config, **dict(choice.overrides))

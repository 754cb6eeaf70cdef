"""Step caching with diffusers' TaylorSeer cache: on a request that asks for it, the
transformer computes the first steps, then one in three and the last, and every step
between is extrapolated from the last two computed (a first-order Taylor expansion of
its output, `proj_out`'s); the transformer blocks are skipped on those steps (diffusers'
"lite" mode). About 11 of 28 steps computed, as Replicate's Kontext go_fast does (full
first and last steps, then one in three).

On the go_fast model the hooks are installed once, before it is compiled, and switched
on and off per request by their own settings, which are read outside the compiled code:
a request with or without the cache, at any size or step count, needs no new graph. On
the eager model they are added for a request that asks for the cache and removed after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from models.log import log

# Every INTERVAL-th step after the first FIRST ones is computed (and the last one).
INTERVAL = 3
FIRST = 2
_NEVER = 10**9  # a step index no request reaches: every step computed
_HOOK = "taylorseer_cache"  # diffusers.hooks.taylorseer_cache._TAYLORSEER_CACHE_HOOK


def remove_step_cache(model: torch.nn.Module) -> None:
    """The model as it was before any StepCache: hooks removed, and the output layer's own
    forward back where the count had wrapped it (removing a hook restores that)."""
    if getattr(model, "_cache_config", None) is None:
        return
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(_HOOK) if registry else None
        if hook is not None:
            reference = hook.fn_ref
            reference.original_forward = getattr(
                reference.original_forward, "uncounted", reference.original_forward
            )
    model.disable_cache()


class StepCache:
    """The TaylorSeer hooks on one transformer, off unless a request turns them on.

    `permanent`: installed once (the go_fast model, before it is compiled: hooks added
    later would change the compiled blocks' code) and switched per request. Otherwise
    (the eager model) installed for a request that asks for the cache and removed after
    it, so an uncached request runs the bare model, at its full speed."""

    def __init__(self, model: torch.nn.Module, *, permanent: bool):
        self.model, self.permanent = model, permanent
        self.computed = 0
        self.output = None
        if permanent:
            self._install()

    def _install(self) -> None:
        """The hooks on the blocks and on the output layer as the model has them now
        (replacing any a previous StepCache left on it)."""
        from diffusers import TaylorSeerCacheConfig

        remove_step_cache(self.model)
        self.model.enable_cache(
            TaylorSeerCacheConfig(
                cache_interval=INTERVAL,
                disable_cache_before_step=FIRST,
                taylor_factors_dtype=torch.float32,
                use_lite_mode=True,
            )
        )
        self.hooks = []
        for module in self.model.modules():
            registry = getattr(module, "_diffusers_hook", None)
            hook = registry.get_hook(_HOOK) if registry else None
            if hook is not None:
                self.hooks.append(hook)
        # proj_out's hook runs the layer only on computed steps: count those. The hook
        # sits on the layer the model calls now: a LoRA's PEFT wrapper included, so its
        # part of the output is extrapolated with the rest.
        self.output = self.model.proj_out
        reference = self.output._diffusers_hook.get_hook(_HOOK).fn_ref
        forward = reference.original_forward

        def counted(*args, **kwargs):
            self.computed += 1
            return forward(*args, **kwargs)

        counted.uncounted = forward
        reference.original_forward = counted
        self._set(on=False, calls=0)

    def _set(self, *, on: bool, calls: int) -> None:
        for hook in self.hooks:
            hook.disable_cache_before_step = FIRST if on else _NEVER
            hook.disable_cache_after_step = calls - 1 if on else None

    @contextmanager
    def active(self, on: bool, calls: int) -> Iterator[None]:
        """The cache on (`on`) for one request of `calls` transformer calls, its state
        fresh, and off again afterwards whatever happens; logs what was computed."""
        hooked = self.permanent or on
        if hooked and (not self.permanent or self.model.proj_out is not self.output):
            self._install()  # a LoRA loaded since may have wrapped proj_out (PEFT)
        self.computed = 0
        try:
            if hooked:
                self.model._reset_stateful_cache()
                self._set(on=on, calls=calls)
                # FluxPipeline names the context of each call itself, the other FLUX
                # pipelines do not: the hooks keep their state under this one then.
                with self.model.cache_context("cond"):
                    yield
            else:
                yield
                self.computed = calls  # no hooks: the bare model computes every step
            state = "on" if on else "off"
            log.info(
                f"Step cache {state}: the transformer computed {self.computed} of {calls} steps"
            )
        finally:
            if self.permanent:
                self._set(on=False, calls=0)
                self.model._reset_stateful_cache()
            elif hooked:
                remove_step_cache(self.model)

"""LoRA slots in a compiled transformer/UNet: swapping LoRAs and changing their scales
never re-traces a compiled graph.

The compiled model gets two adapters ("slots", one per LoRA input) on every Linear layer,
at `target_rank`, before it is compiled; its scalings become tensors (peft's
prepare_model_for_compiled_hotswap) so a new value is data, not a guard. A request's
LoRA is first loaded the ordinary way into the eager model (every layout diffusers
reads, and all our checks; see models/loras/adapters.py); its layers are then copied into a slot
with peft's hotswap_adapter_from_state_dict, each layer's own alpha/rank already
multiplied into its up-projection, so one uniform slot config fits every LoRA (diffusers'
own hot-swap refuses LoRAs whose per-layer alphas differ). Layers a LoRA does not touch
are zeroed, smaller ranks are zero-padded.

Two graph variants exist after warm-up: adapters disabled (a request without LoRA runs
the base layers only) and both slots enabled (an unused slot runs at scale 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from models.errors import InputError

SLOTS = ("slot_0", "slot_1")


class LoraSlots:
    def __init__(self, model: torch.nn.Module, *, target_rank: int):
        from peft import LoraConfig
        from peft.utils.hotswap import prepare_model_for_compiled_hotswap

        self.model, self.rank = model, target_rank
        targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        # alpha = r: scaling 1, so a copied layer's effect is exactly its baked weights.
        self.config = LoraConfig(r=target_rank, lora_alpha=target_rank, target_modules=targets)
        with warnings.catch_warnings():
            # Two adapters are the point; slots are never merged into fp8 weights.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated")
            for slot in SLOTS:
                model.add_adapter(self.config, adapter_name=slot)
        model.set_adapters(list(SLOTS), [1.0] * len(SLOTS))
        prepare_model_for_compiled_hotswap(model, target_rank=target_rank)
        self._scalings = [m.scaling for m in model.modules() if _is_lora(m)]
        self.occupants: list[str | None] = [None] * len(SLOTS)
        model.disable_adapters()

    @contextmanager
    def active(
        self, loras: list[tuple[str, float]], source: torch.nn.Module, *, idle: bool = False
    ) -> Iterator[None]:
        """Put the adapters named in `loras` (loaded in `source`, the eager model) into the
        slots at their scales for the body; afterwards the adapters are disabled again.
        `idle` enables the slots even without LoRAs, at scale 0 (to warm that graph up)."""
        try:
            if loras or idle:
                for index, (name, scale) in enumerate(loras):
                    if self.occupants[index] != name:
                        self._copy(index, name, source)
                    self._set_scale(index, scale)
                for index in range(len(loras), len(SLOTS)):
                    self._set_scale(index, 0.0)
                self.model.enable_adapters()
            yield
        finally:
            self.model.disable_adapters()

    def check(self, name: str, source: torch.nn.Module, input_name: str) -> None:
        """Refuse what would change the compiled graph: a rank above the slots', or layers
        the slots do not cover (convolutions)."""
        for path, module in source.named_modules():
            if not (_is_lora(module) and name in module.lora_A):
                continue
            if not isinstance(module.lora_A[name], torch.nn.Linear):
                raise InputError(
                    f"{input_name}: this LoRA changes convolution layers ({path}), which the "
                    "compiled model has no LoRA slots for. Run it with go_fast=false."
                )
            if module.r[name] > self.rank:
                raise InputError(
                    f"{input_name}: this LoRA has rank {module.r[name]}, above the {self.rank} "
                    "the compiled model holds (LORA_TARGET_RANK). Run it with go_fast=false, "
                    "or serve with a higher LORA_TARGET_RANK."
                )

    def _copy(self, index: int, name: str, source: torch.nn.Module) -> None:
        from peft.utils.hotswap import hotswap_adapter_from_state_dict

        slot = SLOTS[index]
        state = {}
        with torch.no_grad():
            for path, module in source.named_modules():
                if _is_lora(module) and name in module.lora_A:
                    scale = _own_scale(module, name)
                    state[f"{path}.lora_A.{slot}.weight"] = module.lora_A[name].weight
                    state[f"{path}.lora_B.{slot}.weight"] = module.lora_B[name].weight * scale
            self.occupants[index] = None  # half-copied weights belong to nobody
            hotswap_adapter_from_state_dict(self.model, state, slot, self.config)
        self.occupants[index] = name

    def _set_scale(self, index: int, value: float) -> None:
        slot = SLOTS[index]
        for scaling in self._scalings:
            scaling[slot].fill_(value)


def _own_scale(module, name: str) -> float:
    """A layer's alpha/rank, as peft computes it before any request weight (module.scaling
    already holds the weight set_adapters gave the current request)."""
    rank = module.r[name] ** 0.5 if module.use_rslora.get(name, False) else module.r[name]
    return module.lora_alpha[name] / rank


def _is_lora(module: torch.nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "scaling")

"""go_fast: a second copy of the transformer/UNet beside the eager one, quantized to fp8
where the GPU multiplies fp8 natively, compiled block by block, with LoRA slots.

go_fast=false runs the eager model in its own precision, bit-deterministic for a seed.
Everything but the transformer/UNet (text encoders, VAE, schedulers) is shared.

- fp8 (torchao): Float8DynamicActivationFloat8WeightConfig with per-row scales on GPUs
  with fp8 matmul (compute capability >= 8.9, e.g. H100, L40S, RTX 4090). Elsewhere
  (A100, CPU) the fast path is compiled without fp8: weight-only fp8 there halves weight
  memory but dequantizes on every matmul, so it is available (FP8=on) but not the default.
  The spec's `fp8_keep` layers (embedders, norms' modulation outside the blocks, the final
  layer) stay in the model's precision: they are small and sensitive.
- torch.compile, regional: each repeated block class is compiled once with dynamic shapes
  (`compile_repeated_blocks(dynamic=True)`), and duck sizing is off so an image-token count
  that happens to equal the text length does not tie the two dimensions together.
- The compiler's artifacts are saved after warm-up and loaded at the next setup
  (torch.compiler.save_cache_artifacts / load_cache_artifacts), under COMPILE_CACHE_DIR.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from models.engine.caching import StepCache
from models.log import log
from models.loras.slots import LoraSlots

MIN_FP8_CAPABILITY = (8, 9)


@dataclass(frozen=True)
class FastPlan:
    """What go_fast does on this machine, decided from the settings and the device."""

    compile: bool
    fp8: str | None  # "per-row" (activations and weights), "weight-only", or None
    why: str  # for the log: what go_fast=true runs here, and why

    @property
    def active(self) -> bool:
        return self.compile or self.fp8 is not None

    def describe(self) -> str:
        if not self.active:
            return f"eager ({self.why})"
        parts = ["compiled" if self.compile else "not compiled"]
        parts.append(f"fp8 {self.fp8}" if self.fp8 else "no fp8")
        return ", ".join(parts) + (f" ({self.why})" if self.why else "")


def fp8_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(torch.device(device))


def plan_fast(compile_setting: str, fp8_setting: str, device: str) -> FastPlan:
    """COMPILE and FP8 are "auto", "on" or "off"; auto compiles on a GPU only (on a CPU the
    compile costs minutes and gains little) and uses fp8 where the GPU multiplies it."""
    gpu = device.startswith("cuda")
    compile_it = compile_setting == "on" or (compile_setting == "auto" and gpu)
    capability = fp8_capability(device)
    fp8, why = None, ""
    if fp8_setting != "off" and capability is not None and capability >= MIN_FP8_CAPABILITY:
        fp8 = "per-row"
    elif fp8_setting == "on":
        fp8 = "weight-only"
        why = "no fp8 matmul here: weight-only fp8 halves memory, it does not speed up"
    elif capability is not None and fp8_setting == "auto":
        why = f"no fp8 matmul on compute capability {capability[0]}.{capability[1]} < 8.9"
    if not gpu and not compile_it and fp8 is None:
        why = "CPU: compiling does not pay off here; COMPILE=on forces it"
    elif compile_setting == "off" and not compile_it:
        why = why or "COMPILE=off"
    return FastPlan(compile=compile_it, fp8=fp8, why=why)


def _quantize(model: torch.nn.Module, fp8: str, keep: tuple[str, ...]) -> int:
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        PerRow,
        quantize_,
    )

    if fp8 == "per-row":
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    else:
        config = Float8WeightOnlyConfig()
    chosen = []

    def wanted(module: torch.nn.Module, name: str) -> bool:
        hit = isinstance(module, torch.nn.Linear) and not name.startswith(keep)
        if hit:
            chosen.append(name)
        return hit

    quantize_(model, config, filter_fn=wanted)
    return len(chosen)


def linear_weight_bytes(module: torch.nn.Module) -> int:
    """Bytes the Linear layers' weights take as stored (fp8 data and scales included),
    LoRA layers left out."""
    total = 0
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear) or ".lora_" in f".{name}":
            continue
        weight = layer.weight
        names = weight.__tensor_flatten__()[0] if hasattr(weight, "__tensor_flatten__") else []
        parts = [getattr(weight, n) for n in names] or [weight]
        total += sum(p.numel() * p.element_size() for p in parts)
    return total


class FastDenoiser:
    """The go_fast copy of a transformer/UNet: fp8 and compiled as `plan` says, with LoRA
    slots (at `target_rank`; 0 leaves them out and refuses LoRAs on this path)."""

    def __init__(
        self,
        eager: torch.nn.Module,
        plan: FastPlan,
        *,
        keep: tuple[str, ...],
        target_rank: int,
        step_cache: bool = False,
    ):
        started = time.perf_counter()
        self.plan = plan
        self.model = copy.deepcopy(eager)
        quantized = _quantize(self.model, plan.fp8, keep) if plan.fp8 else 0
        self.slots = LoraSlots(self.model, target_rank=target_rank) if target_rank else None
        # Before compiling: the compiled blocks then read the cache's hooks every call.
        self.step_cache = StepCache(self.model, permanent=True) if step_cache else None
        if plan.compile:
            # An image-token count equal to the text length must not tie the two together.
            torch.fx.experimental._config.use_duck_shape = False
            self.model.compile_repeated_blocks(dynamic=True)
        took = time.perf_counter() - started
        size = ""
        if quantized:
            fp8, full = linear_weight_bytes(self.model), linear_weight_bytes(eager)
            size = f" ({fp8 / 1e9:.2f} GB of Linear weights instead of {full / 1e9:.2f} GB)"
        log.info(
            f"go_fast model ready in {took:.1f}s: {plan.describe()}, {quantized} fp8 layers{size}"
        )


def cache_path(folder: Path, spec_name: str, plan: FastPlan, device: str) -> Path:
    """One artifact file per model, machine kind and compiler version: artifacts of another
    GPU or torch version would be ignored by torch anyway."""
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "cpu"
    key = f"{spec_name}|{plan.describe()}|{name}|{torch.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return folder / f"{spec_name}-{digest}.bin"


def load_compile_cache(path: Path) -> bool:
    if not path.is_file():
        log.info(f"No compile cache at {path}: compiling from scratch (saved after warm-up)")
        return False
    torch.compiler.load_cache_artifacts(path.read_bytes())
    log.info(f"Loaded compile cache {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    return True


def save_compile_cache(path: Path) -> None:
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        return
    data, _info = saved
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # never half a file for the next process to load
    log.info(f"Saved compile cache {path} ({len(data) / 1e6:.1f} MB)")

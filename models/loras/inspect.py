"""What a LoRA file holds, checked against a model before loading, and what loading it
changed. Conversion is diffusers' own (`lora_state_dict`); this only reads its result."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models.errors import InputError
from models.loras.source import LoraSource

# Raw key fragments that only one family's LoRAs have (checked before conversion, so the
# message can say what the LoRA is for). SDXL first: its UNet also has transformer_blocks.
_FAMILY_MARKERS = (
    ("sdxl", ("input_blocks", "output_blocks", "middle_block", "down_blocks", "up_blocks")),
    ("flux", ("double_blocks", "single_blocks", "single_transformer_blocks", "transformer_blocks")),
)
FAMILY_NAMES = {"flux": "FLUX.1", "sdxl": "SDXL"}
# Converted keys: <component>.<module path>.<A or B>.weight, as PEFT and diffusers name them.
_LORA_KEY = re.compile(
    r"^(?P<component>[a-z_0-9]+)\.(?P<module>.+)\."
    r"(?P<which>lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)"
    r"\.weight$"
)
# One per layer a LoRA names, in every naming diffusers' converters produce.
_DOWN_KEY = re.compile(r"(lora_A|[._]down)\.weight$")


@dataclass(frozen=True)
class LoraInfo:
    """What one LoRA file holds, and what loading it into this model changed."""

    named: int  # layers the file names (after diffusers' conversion)
    trigger_word: str | None = None
    layers: int = 0  # layers of this model it changes
    rank: int = 0
    components: tuple[str, ...] = ()

    @property
    def skipped(self) -> int:
        return max(self.named - self.layers, 0)


def family_of(keys: list[str]) -> str | None:
    for family, markers in _FAMILY_MARKERS:
        if any(marker in key for key in keys for marker in markers):
            return family
    return None


def wrong_family(source: LoraSource, family: str, other: str | None) -> InputError:
    ours, where = FAMILY_NAMES[family], f"{source.input_name}: {source.describe()}"
    known = " or ".join(FAMILY_NAMES.values())
    if other:
        theirs = FAMILY_NAMES[other]
        return InputError(
            f"{where} is a LoRA for {theirs}, and this model is {ours}. A LoRA works only "
            f"with the model family it was trained for ({known}): use a LoRA trained for "
            f"{ours}, or run this one with {theirs}."
        )
    return InputError(
        f"{where} changes none of this {ours} model's transformer/UNet layers: it is for "
        f"another model family ({known}) or not a LoRA. Use a LoRA trained for {ours}."
    )


# What diffusers' lora_state_dict needs, per family, to convert a file for a pipeline.
_CONVERT_KWARGS = {
    "flux": lambda pipe: {"return_alphas": True},
    "sdxl": lambda pipe: {"unet_config": pipe.unet.config},
}


def _convert(pipe, family: str, path: Path):
    """diffusers' own conversion to its key layout: (state dict, network alphas)."""
    return type(pipe).lora_state_dict(str(path), **_CONVERT_KWARGS[family](pipe))


def inspect_lora(
    pipe, family: str, components: tuple[str, ...], path: Path, source: LoraSource
) -> LoraInfo:
    """Check, before loading, that the LoRA at `path` is for this family and that the
    layers it names have this model's shapes; InputError if not."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw_keys, metadata = list(f.keys()), f.metadata() or {}
    detected = family_of(raw_keys)
    if detected is not None and detected != family:
        raise wrong_family(source, family, detected)
    try:
        with quiet_diffusers():
            state_dict, _alphas = _convert(pipe, family, path)
    except Exception as err:  # diffusers raises ValueError/KeyError/AssertionError here
        raise InputError(
            f"{source.input_name}: {source.describe()} is in no LoRA layout "
            f"diffusers reads for {FAMILY_NAMES[family]} ({type(err).__name__}: {err})."
        ) from None
    mismatched = []
    for key, tensor in state_dict.items():
        found = _LORA_KEY.match(key)
        if found is None or found["component"] not in components:
            continue
        module = _module(getattr(pipe, found["component"], None), found["module"])
        if module is None:
            continue  # not in this model (counted after loading) or in another naming
        is_a = found["which"].endswith(("A", "down"))
        expected = module.weight.shape[1] if is_a else module.weight.shape[0]
        actual = tensor.shape[1] if is_a else tensor.shape[0]
        if actual != expected:
            mismatched.append(f"{found['component']}.{found['module']} ({actual} vs {expected})")
    if mismatched:
        raise InputError(
            f"{source.input_name}: {source.describe()} was made for a model "
            f"with other layer sizes ({len(mismatched)} layers differ, e.g. "
            f"{', '.join(mismatched[:3])}). FLUX control LoRAs (Canny, Depth) and LoRAs for "
            "other architectures are not supported: use a LoRA for this model."
        )
    named = sum(1 for key in state_dict if _DOWN_KEY.search(key))
    if named == 0:  # e.g. a textual-inversion embedding or a full checkpoint
        raise wrong_family(source, family, None)
    return LoraInfo(named=named, trigger_word=metadata.get("trigger_word") or None)


def injected(pipe, components: tuple[str, ...], name: str) -> tuple[int, int, tuple[str, ...]]:
    """(layers, highest rank, components) that adapter `name` changes in `pipe`. A layer
    whose up-projection stayed all zeros (its weights were not in the file) changes
    nothing and is not counted."""
    layers, rank, used = 0, 0, []
    for component in components:
        model = getattr(pipe, component, None)
        count = 0
        for module in model.modules() if model is not None else ():
            ranks, ups = getattr(module, "r", None), getattr(module, "lora_B", None)
            if not (isinstance(ranks, dict) and name in ranks and ups is not None):
                continue
            if bool(ups[name].weight.any()):
                count += 1
                rank = max(rank, ranks[name])
        if count:
            layers += count
            used.append(component)
    return layers, rank, tuple(used)


def _module(model, path: str):
    if model is None:
        return None
    if path.startswith("text_model.") and not hasattr(model, "text_model"):
        path = path.removeprefix("text_model.")  # as diffusers does: transformers 5 CLIP
    try:
        module = model.get_submodule(path)
    except AttributeError:
        return None
    module = getattr(module, "base_layer", module)  # already wrapped by an earlier LoRA
    return module if hasattr(module, "weight") and module.weight.dim() in (2, 4) else None


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers warns about the *other* adapters' keys when one more is loaded, about
    components a LoRA does not cover, and transformers 5 prints a table of "missing" text
    encoder keys that did load; we log what matched and what was skipped instead."""
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft", "transformers")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # peft: "Already found a `peft_config` attribute": several adapters are the point.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)

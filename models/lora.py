"""LoRAs in a request: the inputs, what a LoRA file holds, and the adapters a model keeps
loaded between requests.

Loading and format conversion are diffusers' (`load_lora_weights` reads diffusers/PEFT,
kohya/sd-scripts, XLabs and ComfyUI layouts). Before loading, `inspect_lora` checks the
LoRA belongs to this family, counts the layers it changes here and those it skips, and
refuses shapes made for another model: diffusers would otherwise fail deep inside, or for
FLUX control LoRAs widen the transformer for every later request.

Scale goes through one mechanism: each request sets every active adapter's weight with
`set_adapters` (absolute, so nothing drifts between requests), and no `scale` is passed
in joint_attention_kwargs / cross_attention_kwargs (that is one factor for all adapters,
applied by multiplying and then dividing, and squares the scale when combined).
No LoRA is ever fused into the base weights: after a request the adapters are disabled,
which runs the untouched base layers, bit for bit.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from models.errors import InputError, check_range
from models.log import log
from models.lora_cache import LoraCache, cache_key
from models.lora_sources import Hosts, LoraSource, Tokens, fetch_source, parse_source

SCALE_RANGE = (-1.0, 3.0)
# Raw key fragments that only one family's LoRAs have (checked before conversion, so the
# message can say what the LoRA is for). SDXL first: its UNet also has transformer_blocks.
_FAMILY_MARKERS = (
    ("sdxl", ("input_blocks", "output_blocks", "middle_block", "down_blocks", "up_blocks")),
    ("flux", ("double_blocks", "single_blocks", "single_transformer_blocks", "transformer_blocks")),
)
_FAMILY_NAMES = {"flux": "FLUX.1", "sdxl": "SDXL"}
# Converted keys: <component>.<module path>.<A or B>.weight, as PEFT and diffusers name them.
_LORA_KEY = re.compile(
    r"^(?P<component>[a-z_0-9]+)\.(?P<module>.+)\."
    r"(?P<which>lora_A|lora_B|lora\.down|lora\.up|lora_linear_layer\.down|lora_linear_layer\.up)"
    r"\.weight$"
)
# One per layer a LoRA names, in every naming diffusers' converters produce.
_DOWN_KEY = re.compile(r"(lora_A|[._]down)\.weight$")


@dataclass(frozen=True)
class LoraRequest:
    source: LoraSource
    scale: float


@dataclass(frozen=True, kw_only=True)
class LoraInputs:
    """The LoRA inputs every predictor takes, as plain values (family inputs extend it)."""

    lora_weights: str | None = None
    lora_scale: float = 1.0
    extra_lora: str | None = None
    extra_lora_scale: float = 1.0
    hf_api_token: str | None = field(default=None, repr=False)
    civitai_api_token: str | None = field(default=None, repr=False)

    def lora_requests(self) -> tuple[LoraRequest, ...]:
        return lora_requests(
            self.lora_weights, self.lora_scale, self.extra_lora, self.extra_lora_scale
        )

    def tokens(self) -> Tokens:
        return Tokens(huggingface=self.hf_api_token, civitai=self.civitai_api_token)


def lora_requests(
    lora_weights: str | None,
    lora_scale: float,
    extra_lora: str | None,
    extra_lora_scale: float,
) -> tuple[LoraRequest, ...]:
    """The request's LoRAs, validated and parsed (nothing is fetched yet)."""
    check_range("lora_scale", lora_scale, *SCALE_RANGE)
    check_range("extra_lora_scale", extra_lora_scale, *SCALE_RANGE)
    found = []
    for name, value, scale in (
        ("lora_weights", lora_weights, lora_scale),
        ("extra_lora", extra_lora, extra_lora_scale),
    ):
        if value is not None and value.strip():
            found.append(LoraRequest(parse_source(value, name), scale))
    if len(found) == 2 and _same(*(r.source for r in found)):
        total = found[0].scale + found[1].scale
        log.info(
            f"extra_lora is the same LoRA as lora_weights: applying it once at "
            f"lora_scale + extra_lora_scale = {total:g}."
        )
        return (LoraRequest(found[0].source, total),)
    return tuple(found)


def _same(a: LoraSource, b: LoraSource) -> bool:
    return (a.kind, a.location, a.revision, a.filename) == (
        b.kind,
        b.location,
        b.revision,
        b.filename,
    )


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


def _wrong_family(request: LoraRequest, family: str, other: str | None) -> InputError:
    ours, where = _FAMILY_NAMES[family], f"{request.source.input_name}: {request.source.describe()}"
    known = " or ".join(_FAMILY_NAMES.values())
    if other:
        theirs = _FAMILY_NAMES[other]
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


def inspect_lora(pipe, family: str, components: tuple[str, ...], path: Path, request) -> LoraInfo:
    """Check, before loading, that the LoRA at `path` is for this family and that the
    layers it names have this model's shapes; InputError if not."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw_keys, metadata = list(f.keys()), f.metadata() or {}
    detected = family_of(raw_keys)
    if detected is not None and detected != family:
        raise _wrong_family(request, family, detected)
    try:
        with _quiet_diffusers():
            state_dict, _alphas = _convert(pipe, family, path)
    except Exception as err:  # diffusers raises ValueError/KeyError/AssertionError here
        raise InputError(
            f"{request.source.input_name}: {request.source.describe()} is in no LoRA layout "
            f"diffusers reads for {_FAMILY_NAMES[family]} ({type(err).__name__}: {err})."
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
            f"{request.source.input_name}: {request.source.describe()} was made for a model "
            f"with other layer sizes ({len(mismatched)} layers differ, e.g. "
            f"{', '.join(mismatched[:3])}). FLUX control LoRAs (Canny, Depth) and LoRAs for "
            "other architectures are not supported: use a LoRA for this model."
        )
    named = sum(1 for key in state_dict if _DOWN_KEY.search(key))
    if named == 0:  # e.g. a textual-inversion embedding or a full checkpoint
        raise _wrong_family(request, family, None)
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
def _quiet_diffusers() -> Iterator[None]:
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


@dataclass
class LoraStore:
    """Fetches LoRAs into the disk cache (models/lora_cache.py)."""

    cache: LoraCache
    hosts: Hosts = field(default_factory=Hosts)

    @contextmanager
    def fetched(self, request: LoraRequest, tokens: Tokens) -> Iterator[Path]:
        source = request.source
        started = time.perf_counter()
        fetch = partial(fetch_source, source, tokens=tokens, hosts=self.hosts)
        with self.cache.entry(source.canonical(), fetch) as (path, hit):
            took = time.perf_counter() - started
            if hit:
                log.info(f"{source.input_name}: {source.describe()} read from the disk cache")
            else:
                size = path.stat().st_size / 1e6
                what = f"{source.describe()} ({size:.1f} MB)"
                log.info(f"{source.input_name}: fetched {what} in {took:.2f}s")
            yield path


class Adapters:
    """The LoRAs loaded into one pipeline's models, kept on the device between requests
    (at most `max_loaded`, least recently used unloaded first).

    Every component of the pipeline's family shares them: the mode pipelines derived with
    from_pipe hold the same transformer/UNet and text encoders."""

    def __init__(
        self,
        pipe,
        family: str,
        components: tuple[str, ...],
        store: LoraStore,
        *,
        max_loaded: int = 8,
    ):
        self.pipe, self.family, self.components = pipe, family, components
        self.store, self.max_loaded = store, max_loaded
        self.loaded: OrderedDict[str, LoraInfo] = OrderedDict()

    @contextmanager
    def active(self, requests: tuple[LoraRequest, ...], tokens: Tokens, prompt: str = ""):
        """Activate the requested LoRAs at their scales for the body, which gets their
        (adapter name, scale) pairs; afterwards no adapter is active, whatever happened."""
        active: list[tuple[str, float]] = []
        try:
            if requests:
                names: list[str] = []
                for request in requests:
                    names.append(self._ensure(request, tokens, prompt, keep=names))
                self.pipe.enable_lora()
                self.pipe.set_adapters(names, [r.scale for r in requests])
                scales = ", ".join(f"{r.source.input_name} at {r.scale:g}" for r in requests)
                log.info(f"LoRA active: {scales}")
                active = list(zip(names, (r.scale for r in requests), strict=True))
            yield active
        finally:
            if self.loaded:
                self.pipe.disable_lora()

    def _ensure(self, request: LoraRequest, tokens: Tokens, prompt: str, keep: list) -> str:
        source = request.source
        name = f"lora_{cache_key(source.canonical())[:16]}"
        if name in self.loaded:
            self.loaded.move_to_end(name)
            log.info(f"{source.input_name}: {source.describe()} is already loaded")
            self._note_trigger(request, self.loaded[name], prompt)
            return name
        with self.store.fetched(request, tokens) as path:
            info = inspect_lora(self.pipe, self.family, self.components, path, request)
            self._make_room(keep)
            started = time.perf_counter()
            try:
                with _quiet_diffusers():
                    self.pipe.load_lora_weights(str(path), adapter_name=name)
            except Exception as err:
                self._unload(name)
                raise InputError(
                    f"{source.input_name}: {source.describe()} could not be loaded into this "
                    f"{_FAMILY_NAMES[self.family]} model ({type(err).__name__}: {err})."
                ) from None
        layers, rank, used = injected(self.pipe, self.components, name)
        info = replace(info, layers=layers, rank=rank, components=used)
        if self.components[0] not in used:  # nothing for the transformer/UNet
            self._unload(name)
            raise _wrong_family(request, self.family, None)
        self.loaded[name] = info
        skipped = f"; {info.skipped} layers it names are not in this model" if info.skipped else ""
        log.info(
            f"{source.input_name}: loaded in {time.perf_counter() - started:.2f}s, rank "
            f"{info.rank}, {info.layers} layers of {'+'.join(info.components)}{skipped}"
        )
        self._note_trigger(request, info, prompt)
        return name

    def _note_trigger(self, request: LoraRequest, info: LoraInfo, prompt: str) -> None:
        word = info.trigger_word
        if word and word.lower() not in prompt.lower():
            log.info(
                f"{request.source.input_name}: this LoRA was trained with the trigger word "
                f"{word!r}, which the prompt does not contain; add it to invoke what it learnt."
            )

    def _make_room(self, keep: list) -> None:
        """Unload the least recently used adapters (not those this request uses)."""
        while len(self.loaded) >= max(self.max_loaded, len(keep) + 1):
            oldest = next(name for name in self.loaded if name not in keep)
            self._unload(oldest)
            log.info(f"Unloaded LoRA {oldest} (least recently used) to keep {self.max_loaded}")

    def _unload(self, name: str) -> None:
        self.loaded.pop(name, None)
        present = {a for adapters in self.pipe.get_list_adapters().values() for a in adapters}
        if name in present:
            self.pipe.delete_adapters([name])

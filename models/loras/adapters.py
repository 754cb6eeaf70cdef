"""LoRAs in a request: the inputs, fetching into the disk cache (LoraStore), and the
adapters a model keeps loaded between requests (Adapters).

Loading and format conversion are diffusers' (`load_lora_weights` reads diffusers/PEFT,
kohya/sd-scripts, XLabs and ComfyUI layouts). Before loading, `inspect_lora`
(models/loras/inspect.py) checks the LoRA belongs to this family and refuses shapes made
for another model: diffusers would otherwise fail deep inside, or for FLUX control LoRAs
widen the transformer for every later request. After loading, the layers it changed and
those it named but this model lacks are counted and logged.

Scale goes through one mechanism: each request sets every active adapter's weight with
`set_adapters` (absolute, so nothing drifts between requests), and no `scale` is passed
in joint_attention_kwargs / cross_attention_kwargs (that is one factor for all adapters,
applied by multiplying and then dividing, and squares the scale when combined).
No LoRA is ever fused into the base weights: after a request the adapters are disabled,
which runs the untouched base layers, bit for bit.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from models.errors import InputError, check_range
from models.log import log
from models.loras.cache import LoraCache, cache_key
from models.loras.fetch import fetch_source
from models.loras.inspect import (
    FAMILY_NAMES,
    LoraInfo,
    injected,
    inspect_lora,
    quiet_diffusers,
    wrong_family,
)
from models.loras.sources import Hosts, LoraSource, Tokens, parse_source

SCALE_RANGE = (-1.0, 3.0)

SCALE_RANGE = (-1.0, 3.0)


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


@dataclass
class LoraStore:
    """Fetches LoRAs into the disk cache (models/loras/cache.py)."""

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
                with quiet_diffusers():
                    self.pipe.load_lora_weights(str(path), adapter_name=name)
            except Exception as err:
                self._unload(name)
                raise InputError(
                    f"{source.input_name}: {source.describe()} could not be loaded into this "
                    f"{FAMILY_NAMES[self.family]} model ({type(err).__name__}: {err})."
                ) from None
        layers, rank, used = injected(self.pipe, self.components, name)
        info = replace(info, layers=layers, rank=rank, components=used)
        if self.components[0] not in used:  # nothing for the transformer/UNet
            self._unload(name)
            raise wrong_family(request, self.family, None)
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

"""The LoRAs a model keeps loaded between requests (Adapters): fetched by LoraFetcher
(models/loras/fetch.py), checked, loaded, activated at their scales, and unloaded.

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
from contextlib import contextmanager
from dataclasses import replace

from models.errors import InputError
from models.log import log
from models.loras.cache import cache_key
from models.loras.fetch import LoraFetcher
from models.loras.inputs import LoraRequest
from models.loras.inspect import (
    FAMILY_NAMES,
    LoraInfo,
    injected,
    inspect_lora,
    quiet_diffusers,
    wrong_family,
)
from models.loras.source import Tokens


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
        fetcher: LoraFetcher,
        *,
        max_loaded: int = 8,
    ):
        self.pipe, self.family, self.components = pipe, family, components
        self.fetcher, self.max_loaded = fetcher, max_loaded
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
        with self.fetcher.fetched(source, tokens) as path:
            info = inspect_lora(self.pipe, self.family, self.components, path, source)
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
            raise wrong_family(source, self.family, None)
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

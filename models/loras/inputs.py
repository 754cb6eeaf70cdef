"""The LoRA inputs every predictor takes, read into requests (nothing is fetched yet)."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.errors import check_range
from models.log import log
from models.loras.kinds import parse_source
from models.loras.source import LoraSource, Tokens

# lora_scale and extra_lora_scale: 1 applies a LoRA as trained, 0 not at all.
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

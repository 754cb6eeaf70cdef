"""`script/bench --lora`: what a LoRA costs, measured in this process on one variant.

- load_s: getting a LoRA active for a request: first time from a local URL (download +
  disk cache + diffusers conversion + loading onto the device), again after it was
  unloaded (read from the disk cache), and when it is still on the device;
- request_s: a whole request without and with that LoRA, and their ratio;
- recompiles: graphs compiled while swapping 10 LoRAs and scales on the go_fast model
  (COMPILE=on forces compiling on a CPU; slow there, so --lora-compile opts in).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from models.loras.source import Tokens
from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from tools.fixtures.hub import Hub
from tools.fixtures.loras import lora_for


def _median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_lora(model_name: str, inputs: dict, *, runs: int, rank: int, compile_it: bool) -> dict:
    spec = get_spec(model_name)
    family = FAMILIES[spec.interface]
    folder = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    with Hub() as hub:
        settings = replace(
            load_settings(),
            safety_checker=False,
            lora_cache_dir=folder / "cache",
            compile="on" if compile_it else "off",
            fp8="off",
            lora_target_rank=rank,
            compile_cache_dir=folder / "compile-cache",
            **hub.endpoints(),
        )
        model = DiffusionModel(spec, settings)
        pipe = model.engine.pipes["txt2img"]
        make = lora_for(spec.family)
        urls = [
            hub.add_file(f"lora-{i}.safetensors",
                         make(pipe, folder / f"{i}.safetensors", rank=rank, seed=i).read_bytes())
            for i in range(3)
        ]  # fmt: skip
        engine, base = model.engine, dict(inputs, go_fast=compile_it)

        def activate(url: str) -> float:
            job = model.plan(spec, family.inputs(**base, lora_weights=url))
            started = time.perf_counter()
            with engine.adapters.active(job.loras, Tokens(), job.prompt):
                return time.perf_counter() - started

        first = activate(urls[0])
        engine.adapters._unload(next(iter(engine.adapters.loaded)))
        from_disk = activate(urls[0])
        on_device = activate(urls[0])
        plain = lambda **kw: model.predict(family.inputs(**base, **kw))  # noqa: E731
        plain(lora_weights=urls[0])  # warm
        without = _median_time(plain, runs)
        with_lora = _median_time(lambda: plain(lora_weights=urls[0]), runs)
        result = {
            "model": model_name,
            "lora_rank": rank,
            "lora_bytes": (folder / "0.safetensors").stat().st_size,
            "load_first_from_url_s": round(first, 4),
            "load_from_disk_cache_s": round(from_disk, 4),
            "load_already_on_device_s": round(on_device, 4),
            "request_without_lora_s": round(without, 3),
            "request_with_lora_s": round(with_lora, 3),
            "lora_request_ratio": round(with_lora / without, 3),
        }
        if compile_it:
            result["recompiles_during_10_swaps"] = _swaps(model, family, base, urls)
    return result


def _swaps(model, family, base: dict, urls: list[str]) -> int:
    import torch._dynamo.utils as dynamo_utils

    before = dynamo_utils.counters["stats"]["unique_graphs"]
    for swap in range(10):
        extra = {"extra_lora": urls[(swap + 1) % 3]} if swap % 2 else {}
        inputs = dict(base, lora_weights=urls[swap % 3], lora_scale=0.3 * swap - 1, **extra)
        model.predict(family.inputs(**inputs))
    return dynamo_utils.counters["stats"]["unique_graphs"] - before

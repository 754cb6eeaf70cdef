"""Captions for training images that come without a .txt: BLIP, declared in
models/weights/manifest.py and fetched by the resolver like any weights. When it cannot be had
(offline, a failed download), those images train on the trigger word alone, logged."""

from __future__ import annotations

import logging

import torch

from models.errors import WeightsError
from models.log import log
from models.settings import Settings
from models.specs import ModelSpec
from models.weights.resolver import resolve

MAX_WORDS = 40


def autocaption(images: list, spec: ModelSpec, settings: Settings, device: str) -> dict[str, str]:
    """{image name: caption} for `images` (models.train.data.TrainImage); {} without a
    captioner."""
    if spec.captioner is None:
        log.info(f"autocaption: {spec.name} declares no captioner")
        return {}
    try:
        folder = resolve(spec.captioner, settings)
    except WeightsError as err:
        log.info(f"autocaption: the captioner is not available ({err})")
        return {}
    from transformers import BlipForConditionalGeneration, BlipProcessor

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    quiet = logging.getLogger("transformers")
    level, quiet.level = quiet.level, logging.ERROR  # "torchvision not installed" notices
    try:
        processor = BlipProcessor.from_pretrained(folder)
        model = BlipForConditionalGeneration.from_pretrained(folder, dtype=dtype).to(device)
    finally:
        quiet.setLevel(level)
    captions = {}
    with torch.no_grad():
        for item in images:
            inputs = processor(images=item.image, return_tensors="pt").to(device, dtype)
            tokens = model.generate(**inputs, max_new_tokens=MAX_WORDS)
            captions[item.name] = processor.decode(tokens[0], skip_special_tokens=True).strip()
            log.info(f"autocaption: {item.name}: {captions[item.name]!r}")
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return captions

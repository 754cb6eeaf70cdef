"""Two-stage NSFW filter, matching cog-flux.

Stage 1 is the CompVis Stable Diffusion safety checker (CLIP embeddings against
fixed concept thresholds), run once over the whole batch. It over-flags, so
stage 2, the Falconsai ViT classifier ("normal" / "nsfw"), looks again at each
flagged image only. An image is dropped only if both agree it is unsafe. If
stage 2 fails on an image, that image is treated as unsafe: a broken second
opinion must not let through what stage 1 flagged.

The PIL-backed image processors are used because the runtime has no torchvision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.errors import WeightsError
from models.log import log

NSFW_MESSAGE = (
    "All generated images contained NSFW content. Try running it again with a different prompt."
)
_PREPROCESSOR = "preprocessor_config.json"


class NSFWError(RuntimeError):
    """Every image of a prediction was unsafe."""


@dataclass(frozen=True)
class Verdict:
    index: int
    stage1_flagged: bool
    # None when stage 2 did not run (stage 1 cleared the image) or failed (see stage2_error).
    stage2_flagged: bool | None
    unsafe: bool
    stage2_error: str | None = None


class SafetyChecker:
    def __init__(self, compvis, compvis_processor, falcon, falcon_processor, device, dtype):
        self.compvis = compvis
        self.compvis_processor = compvis_processor
        self.falcon = falcon
        self.falcon_processor = falcon_processor
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def load(
        cls, compvis_dir: Path, falcon_dir: Path, *, device: str = "cpu", dtype=torch.float32
    ) -> SafetyChecker:
        """Both stages from their folders (models/engine/extras.py loads them the same way,
        each as a manifest entry)."""
        stage1 = load_compvis(compvis_dir, device, dtype)
        stage2 = load_vit_classifier(falcon_dir, device, dtype)
        return cls.from_stages(stage1, stage2, device=device, dtype=dtype)

    @classmethod
    def from_stages(
        cls, stage1: tuple, stage2: tuple, *, device: str = "cpu", dtype=torch.float32
    ) -> SafetyChecker:
        """From loaded (model, processor) pairs: load_compvis's and load_vit_classifier's."""
        return cls(*stage1, *stage2, device, dtype)

    def check(self, images: list[Image.Image]) -> list[Verdict]:
        if not images:
            return []
        verdicts = []
        for i, (image, flagged) in enumerate(zip(images, self._stage1(images), strict=True)):
            if not flagged:
                verdicts.append(Verdict(i, False, None, False))
                continue
            try:
                stage2 = self._stage2(image)
            except Exception as e:  # any failure means "not cleared"
                log.error(f"Safety check stage 2 failed on image {i}, treating it as unsafe: {e!r}")
                verdicts.append(Verdict(i, True, None, True, stage2_error=repr(e)))
                continue
            verdicts.append(Verdict(i, True, stage2, stage2))
        return verdicts

    def _stage1(self, images: list[Image.Image]) -> list[bool]:
        inputs = self.compvis_processor(images=images, return_tensors="pt")
        pixels = inputs.pixel_values.to(self.device, self.dtype)
        # The checker blacks out flagged entries of `images` in place; we only want
        # the flags, so hand it tiny placeholders instead of full-size copies.
        placeholders = np.zeros((len(images), 1), dtype=np.uint8)
        with torch.inference_mode():
            _, flags = self.compvis(clip_input=pixels, images=placeholders)
        return [bool(f) for f in flags]

    def _stage2(self, image: Image.Image) -> bool:
        inputs = self.falcon_processor(images=image, return_tensors="pt")
        pixels = inputs.pixel_values.to(self.device, self.dtype)
        with torch.inference_mode():
            logits = self.falcon(pixel_values=pixels).logits
        label = self.falcon.config.id2label[int(logits.argmax(-1).item())]
        return label != "normal"


def _check_folder(folder: Path) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"Safety checker weights are incomplete: {folder}/config.json is missing. "
            "Delete the folder and resolve the safety-checker weights again."
        )
    return folder


def load_compvis(folder: Path, device: str = "cpu", dtype=torch.float32) -> tuple:
    """Stage 1: the CompVis checker and its image processor."""
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPImageProcessorPil

    folder = _check_folder(folder)
    # Its "a black image will be returned instead" warning is false here: we drop
    # images (and log that ourselves) rather than blacking them out.
    logging.getLogger(StableDiffusionSafetyChecker.__module__).setLevel(logging.ERROR)
    model = StableDiffusionSafetyChecker.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval(), _compvis_processor(folder, CLIPImageProcessorPil)


def load_vit_classifier(folder: Path, device: str = "cpu", dtype=torch.float32) -> tuple:
    """Stage 2: the Falconsai ViT classifier and its image processor."""
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    folder = _check_folder(folder)
    model = ViTForImageClassification.from_pretrained(folder, dtype=dtype)
    return model.to(device).eval(), ViTImageProcessorPil.from_pretrained(folder)


def _compvis_processor(compvis_dir: Path, processor_cls):
    # The HF repo keeps the preprocessor next to the weights, a diffusers pipeline
    # folder in `feature_extractor/`; Replicate's safety tar may have none, and the
    # checker then needs CLIP ViT-L/14's standard preprocessing (the class default).
    for folder in (compvis_dir, compvis_dir / "feature_extractor"):
        if (folder / _PREPROCESSOR).is_file():
            return processor_cls.from_pretrained(folder)
    log.info(f"No {_PREPROCESSOR} in {compvis_dir}: using CLIP ViT-L/14 preprocessing.")
    return processor_cls()


def filter_safe(images: list[Image.Image], checker: SafetyChecker | None) -> list[int]:
    """The indices of the safe images; raise NSFWError if none is safe.

    checker None means the safety checker is disabled: everything is kept silently.
    """
    if checker is None or not images:
        return list(range(len(images)))
    kept = []
    for verdict in checker.check(images):
        if verdict.unsafe:
            log.info(f"NSFW content detected in image {verdict.index}")
            continue
        kept.append(verdict.index)
    if not kept:
        raise NSFWError(NSFW_MESSAGE)
    log.info(f"Total safe images: {len(kept)} out of {len(images)}")
    return kept

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
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import (
            CLIPImageProcessorPil,
            ViTForImageClassification,
            ViTImageProcessorPil,
        )

        compvis_dir, falcon_dir = Path(compvis_dir), Path(falcon_dir)
        for folder in (compvis_dir, falcon_dir):
            if not (folder / "config.json").is_file():
                raise WeightsError(
                    f"Safety checker weights are incomplete: {folder}/config.json is missing. "
                    "Delete the folder and resolve the safety-checker weights again."
                )
        # Its "a black image will be returned instead" warning is false here: we drop
        # images (and log that ourselves) rather than blacking them out.
        logging.getLogger(StableDiffusionSafetyChecker.__module__).setLevel(logging.ERROR)
        compvis = StableDiffusionSafetyChecker.from_pretrained(compvis_dir, dtype=dtype)
        compvis_processor = _compvis_processor(compvis_dir, CLIPImageProcessorPil)
        falcon = ViTForImageClassification.from_pretrained(falcon_dir, dtype=dtype)
        falcon_processor = ViTImageProcessorPil.from_pretrained(falcon_dir)
        return cls(
            compvis.to(device).eval(),
            compvis_processor,
            falcon.to(device).eval(),
            falcon_processor,
            device,
            dtype,
        )

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


def _compvis_processor(compvis_dir: Path, processor_cls):
    # The HF repo keeps the preprocessor next to the weights, a diffusers pipeline
    # folder in `feature_extractor/`; Replicate's safety tar may have none, and the
    # checker then needs CLIP ViT-L/14's standard preprocessing (the class default).
    for folder in (compvis_dir, compvis_dir / "feature_extractor"):
        if (folder / _PREPROCESSOR).is_file():
            return processor_cls.from_pretrained(folder)
    log.info(f"No {_PREPROCESSOR} in {compvis_dir}: using CLIP ViT-L/14 preprocessing.")
    return processor_cls()


def filter_safe(
    images: list[Image.Image], checker: SafetyChecker | None
) -> tuple[list[Image.Image], list[int]]:
    """Keep the safe images and their original indices; raise NSFWError if none is safe.

    checker None means the safety checker is disabled: everything is kept silently.
    """
    if checker is None or not images:
        return list(images), list(range(len(images)))
    kept, indices = [], []
    for verdict in checker.check(images):
        if verdict.unsafe:
            log.info(f"NSFW content detected in image {verdict.index}")
            continue
        kept.append(images[verdict.index])
        indices.append(verdict.index)
    if not kept:
        raise NSFWError(NSFW_MESSAGE)
    log.info(f"Total safe images: {len(kept)} out of {len(images)}")
    return kept, indices


def build_tiny_compvis(dest: Path, *, flag_all: bool, seed: int = 0) -> Path:
    """A random CompVis checker at 32 px that flags every image (flag_all) or none."""
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessorPil

    torch.manual_seed(seed)
    dims = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(dims, vocab_size=99, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(dims, image_size=32, patch_size=8),
        projection_dim=16,
    )
    model = StableDiffusionSafetyChecker(config).eval()
    # Cosine similarity lies in [-1, 1]: a threshold below it flags every concept,
    # one above it flags none, whatever the random weights compute.
    threshold = -2.0 if flag_all else 2.0
    with torch.no_grad():
        model.concept_embeds.normal_()
        model.special_care_embeds.normal_()
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(threshold)
    dest = Path(dest)
    model.save_pretrained(dest)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(dest)
    return dest


def build_tiny_falcon(dest: Path, *, verdict: str = "nsfw", seed: int = 0) -> Path:
    """A random 32 px ViT classifier whose answer is always `verdict` ("normal" or "nsfw")."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    labels = {0: "normal", 1: "nsfw"}  # as in Falconsai/nsfw_image_detection
    if verdict not in labels.values():
        raise ValueError(f"verdict must be 'normal' or 'nsfw', not {verdict!r}")
    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = ViTForImageClassification(config).eval()
    # A zero weight makes the logits equal the bias, so the winner ignores the image.
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([1.0, 0.0] if verdict == "normal" else [0.0, 1.0]))
    dest = Path(dest)
    model.save_pretrained(dest)
    ViTImageProcessorPil(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(dest)
    return dest

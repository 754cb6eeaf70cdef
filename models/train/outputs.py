"""What a training run leaves: the LoRA the predictors load, its kohya/ComfyUI copy,
config.json, the captions used, sample images, and the tar holding them all.

lora.safetensors has diffusers/PEFT key names (`FluxPipeline.save_lora_weights`), plus
`trigger_word`, `base_model` and `training_config` in its safetensors metadata: the
predictors log the trigger word when a prompt lacks it.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from models.log import log
from models.loras.source import LORA_FILE
from models.train.kohya import TO_KOHYA

KOHYA_FILE = "lora_kohya.safetensors"
CONFIG_FILE = "config.json"
CAPTIONS_DIR = "captions"
SAMPLES_DIR = "samples"
# What the tar holds, in this order (checkpoints and unpacked images stay out).
PACKED = (LORA_FILE, KOHYA_FILE, CONFIG_FILE, CAPTIONS_DIR, SAMPLES_DIR)


def _rewrite(path: Path, tensors: dict, metadata: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _read(path: Path) -> tuple[dict, dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118


def save_lora(out_dir: Path, pipe, component: str, model, dtype, metadata: dict) -> Path:
    """The trained adapter of `model` (pipe's `component`) as out_dir/lora.safetensors."""
    from peft.utils import get_peft_model_state_dict

    layers = {k: v.to(dtype) for k, v in get_peft_model_state_dict(model).items()}
    adapter = model.peft_config["default"].to_dict()
    type(pipe).save_lora_weights(
        out_dir,
        weight_name=LORA_FILE,
        **{f"{component}_lora_layers": layers, f"{component}_lora_adapter_metadata": adapter},
    )
    path = out_dir / LORA_FILE
    tensors, existing = _read(path)
    _rewrite(path, tensors, {**existing, **metadata})
    return path


def save_kohya(out_dir: Path, family: str, scale: float) -> Path:
    tensors, metadata = _read(out_dir / LORA_FILE)
    metadata.pop("lora_adapter_metadata", None)  # describes the diffusers key layout only
    path = out_dir / KOHYA_FILE
    _rewrite(path, TO_KOHYA[family](tensors, scale), metadata)
    return path


def save_captions(out_dir: Path, captions: dict[str, str]) -> None:
    """captions/<image path>.txt: the caption each image was trained with."""
    for name, caption in captions.items():
        path = out_dir / CAPTIONS_DIR / PurePosixPath(name).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(caption + "\n", encoding="utf-8")


def save_config(out_dir: Path, config: dict) -> None:
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def pack(out_dir: Path, tar_path: Path) -> Path:
    """Write the tar atomically: a crash never leaves a half tar under the final name."""
    tmp = tar_path.with_name(tar_path.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name in PACKED:
            if (out_dir / name).exists():
                tar.add(out_dir / name, arcname=name)
    os.replace(tmp, tar_path)
    log.info(f"Wrote {tar_path} ({tar_path.stat().st_size / 1e6:.1f} MB)")
    return tar_path


@torch.no_grad()
def save_samples(
    out_dir: Path, pipe, spec, config, prompts: list[str], dtype, starts: list | None = None
) -> list[Path]:
    """Images of `prompts` (the first training captions) with the trained LoRA, at the
    smallest training resolution, in out_dir/samples. Kontext: `starts` are the pictures
    each prompt edits."""
    if not prompts:
        return []
    # The pipeline upcasts a half-precision VAE itself, but cannot decode half latents
    # with a VAE left in float32 for training.
    pipe.vae.to(dtype)
    side = config.resolutions[0]
    folder = out_dir / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, prompt in enumerate(prompts):
        kwargs = dict(
            prompt=prompt,
            width=side,
            height=side,
            num_inference_steps=spec.default_steps,
            guidance_scale=spec.guidance or 0.0,
            generator=torch.Generator("cpu").manual_seed(config.seed + index),
        )
        if spec.family == "flux":
            kwargs["max_sequence_length"] = spec.max_sequence_length
        if starts is not None:  # at the sample's size: no resizing by the pipeline
            picture = starts[index].resize((side, side), Image.Resampling.LANCZOS)
            kwargs |= dict(image=picture, _auto_resize=False)
        image = pipe(**kwargs).images[0]
        path = folder / f"{index}.webp"
        image.save(path, quality=90)
        paths.append(path)
        log.info(f"Sample {path.name}: {prompt!r}")
    return paths

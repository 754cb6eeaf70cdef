"""Random LoRAs for the tiny models, in the layouts people publish LoRAs in.

Tests and `script/bench` use them: every shape is read from the model's own modules, and
the key names follow each layout as diffusers' converters read them:
- diffusers/PEFT: `transformer.<module>.lora_A.weight` (FLUX), `unet.<module>...` (SDXL);
- kohya/sd-scripts: FLUX in BFL module names with fused qkv (`lora_unet_double_blocks_0_
  img_attn_qkv.lora_down.weight` + `.alpha`), SDXL in the original UNet's block numbering
  (`lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q...`), text encoders as
  `lora_te1_...` / `lora_te2_...`;
- XLabs (FLUX): `double_blocks.0.processor.qkv_lora1.down.weight`;
- ComfyUI (FLUX): `diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight`.

kohya FLUX LoRAs here leave out single_blocks' linear1: diffusers splits it with FLUX.1's
fixed widths (3072 x 3 + 12288), which a tiny model does not have.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.train.kohya import BFL_DOUBLE, BFL_SINGLE

_ATTN = ("to_q", "to_k", "to_v", "to_out.0")
_DOUBLE = (
    *(f"attn.{n}" for n in _ATTN),
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)
_SINGLE = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out")
# BFL module name -> the diffusers modules it fuses (kohya, ComfyUI): the trainer's table.
_BFL_DOUBLE = BFL_DOUBLE
# Without linear1: diffusers splits it with FLUX.1's fixed widths (see the docstring).
_BFL_SINGLE = {name: parts for name, parts in BFL_SINGLE.items() if name != "linear1"}
_XLABS = {
    "qkv_lora1": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "proj_lora1": ("attn.to_out.0",),
    "qkv_lora2": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "proj_lora2": ("attn.to_add_out",),
}
_CLIP = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def _pair(gen: torch.Generator, in_f: int, out_f: int, rank: int, strength: float):
    down = torch.randn(rank, in_f, generator=gen) / in_f**0.5
    up = torch.randn(out_f, rank, generator=gen) * strength / rank**0.5
    return down, up


def _shape(model, path: str) -> tuple[int, int]:
    module = model.get_submodule(path)
    module = getattr(module, "base_layer", module)
    return module.in_features, module.out_features


def _clip_pairs(encoder, gen, rank, strength) -> dict[str, tuple]:
    """Keyed as published (`text_model.encoder...`), whether or not this transformers
    version's CLIP model has the `text_model` level (5.x flattened it)."""
    inner = "text_model." if hasattr(encoder, "text_model") else ""
    pairs = {}
    for layer in range(encoder.config.num_hidden_layers):
        for name in _CLIP:
            path = f"encoder.layers.{layer}.{name}"
            pairs[f"text_model.{path}"] = _pair(gen, *_shape(encoder, inner + path), rank, strength)
    return pairs


def flux_lora(
    pipe,
    dest: Path,
    *,
    layout: str = "diffusers",
    rank: int = 4,
    seed: int = 0,
    strength: float = 1.0,
    text_encoder: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a random LoRA for `pipe`'s FLUX transformer (and CLIP, if asked) to dest."""
    gen = torch.Generator().manual_seed(seed)
    t = pipe.transformer
    doubles, singles = len(t.transformer_blocks), len(t.single_transformer_blocks)
    tensors: dict[str, torch.Tensor] = {}
    if layout == "diffusers":
        paths = [f"transformer_blocks.{i}.{m}" for i in range(doubles) for m in _DOUBLE]
        paths += [f"single_transformer_blocks.{i}.{m}" for i in range(singles) for m in _SINGLE]
        for path in paths:
            down, up = _pair(gen, *_shape(t, path), rank, strength)
            tensors[f"transformer.{path}.lora_A.weight"] = down
            tensors[f"transformer.{path}.lora_B.weight"] = up
    elif layout in ("kohya", "comfyui"):
        fused = {
            f"double_blocks.{i}.{bfl}": (f"transformer_blocks.{i}", parts)
            for i in range(doubles)
            for bfl, parts in _BFL_DOUBLE.items()
        }
        fused |= {
            f"single_blocks.{i}.{bfl}": (f"single_transformer_blocks.{i}", parts)
            for i in range(singles)
            for bfl, parts in _BFL_SINGLE.items()
        }
        for bfl, (block, parts) in fused.items():
            in_f = _shape(t, f"{block}.{parts[0]}")[0]
            out_f = sum(_shape(t, f"{block}.{p}")[1] for p in parts)
            down, up = _pair(gen, in_f, out_f, rank, strength)
            name = (
                f"lora_unet_{bfl.replace('.', '_')}"
                if layout == "kohya"
                else (f"diffusion_model.{bfl}")
            )
            tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    elif layout == "xlabs":
        for i in range(doubles):
            for name, parts in _XLABS.items():
                in_f = _shape(t, f"transformer_blocks.{i}.{parts[0]}")[0]
                out_f = sum(_shape(t, f"transformer_blocks.{i}.{p}")[1] for p in parts)
                down, up = _pair(gen, in_f, out_f, rank, strength)
                key = f"double_blocks.{i}.processor.{name}"
                tensors |= {f"{key}.down.weight": down, f"{key}.up.weight": up}
    else:
        raise ValueError(f"unknown FLUX LoRA layout {layout!r}")
    if text_encoder:
        for path, (down, up) in _clip_pairs(pipe.text_encoder, gen, rank, strength).items():
            if layout == "diffusers":
                tensors[f"text_encoder.{path}.lora_A.weight"] = down
                tensors[f"text_encoder.{path}.lora_B.weight"] = up
            else:
                name = f"lora_te1_{path.replace('.', '_')}"
                tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
    return _save(tensors, dest, metadata)


def _sgm_name(path: str, layers_per_block: int) -> str:
    """diffusers UNet attention path -> the original SDXL UNet's (kohya's) numbering."""
    parts = path.split(".")
    per = layers_per_block + 1
    if parts[0] == "mid_block":  # mid_block.attentions.0.<rest>
        return ".".join(["middle_block.1", *parts[3:]])
    if parts[0] == "down_blocks":  # down_blocks.<b>.attentions.<l>.<rest>
        head = f"input_blocks.{1 + int(parts[1]) * per + int(parts[3])}.1"
    else:
        head = f"output_blocks.{int(parts[1]) * per + int(parts[3])}.1"
    return ".".join([head, *parts[4:]])


def sdxl_lora(
    pipe,
    dest: Path,
    *,
    layout: str = "diffusers",
    rank: int = 4,
    seed: int = 0,
    strength: float = 1.0,
    text_encoder: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a random LoRA for `pipe`'s SDXL UNet attention (and both CLIPs) to dest."""
    gen = torch.Generator().manual_seed(seed)
    unet = pipe.unet
    attention = re.compile(r"\.transformer_blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$")
    paths = [name for name, _ in unet.named_modules() if attention.search(name)]
    tensors: dict[str, torch.Tensor] = {}
    for path in paths:
        down, up = _pair(gen, *_shape(unet, path), rank, strength)
        if layout == "diffusers":
            tensors[f"unet.{path}.lora_A.weight"] = down
            tensors[f"unet.{path}.lora_B.weight"] = up
        elif layout == "kohya":
            sgm = _sgm_name(path, unet.config.layers_per_block)
            name = f"lora_unet_{sgm.replace('.', '_')}"
            tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
        else:
            raise ValueError(f"unknown SDXL LoRA layout {layout!r}")
    if text_encoder:
        for index, encoder in ((1, pipe.text_encoder), (2, pipe.text_encoder_2)):
            for path, (down, up) in _clip_pairs(encoder, gen, rank, strength).items():
                if layout == "diffusers":
                    prefix = "text_encoder" if index == 1 else "text_encoder_2"
                    tensors[f"{prefix}.{path}.lora_A.weight"] = down
                    tensors[f"{prefix}.{path}.lora_B.weight"] = up
                else:
                    name = f"lora_te{index}_{path.replace('.', '_')}"
                    tensors |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up}
    return _save(tensors, dest, metadata)


def _save(tensors: dict, dest: Path, metadata: dict[str, str] | None) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest), metadata=metadata)
    return dest


def lora_for(family: str):
    """The builder for a model family (ModelSpec.family)."""
    return {"flux": flux_lora, "sdxl": sdxl_lora}[family]

"""A copy of a trained LoRA in the kohya/sd-scripts layout, which ComfyUI, Forge and
kohya-based tools load.

FLUX: diffusers names each projection (`transformer_blocks.0.attn.to_q`); the original
BFL model, which ComfyUI and sd-scripts patch, fuses some of them (`double_blocks.0.
img_attn.qkv`, and `single_blocks.0.linear1` = to_q, to_k, to_v and proj_mlp stacked).
ComfyUI maps `lora_unet_<BFL name with _ for .>` to `diffusion_model.<BFL name>.weight`
(comfy/lora.py, model_lora_keys_unet: the generic "lora_unet_{}" entry for every
diffusion_model weight). A fused module gets one LoRA whose down matrix stacks the
parts' down matrices and whose up matrix is block-diagonal: the same update, at rank
parts x r, with alpha scaled so alpha / rank keeps the trained scale. diffusers' own
kohya loader recognises that block-diagonal form and splits it back losslessly.
(`diffusers.utils.convert_state_dict_to_kohya` knows no `transformer.` prefix and would
write keys that load as nothing.)

SDXL: diffusers' `convert_state_dict_to_kohya` (UNet names with `_`, `lora_unet_`
prefix, alpha = rank), the form diffusers' SDXL LoRA example exports and ComfyUI maps
through `unet_to_diffusers`.
"""

from __future__ import annotations

import torch

# BFL module in a FLUX double block -> the diffusers modules it fuses, in order.
BFL_DOUBLE = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.proj": ("attn.to_out.0",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "img_mod.lin": ("norm1.linear",),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn.proj": ("attn.to_add_out",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
    "txt_mod.lin": ("norm1_context.linear",),
}
# ... and in a single block.
BFL_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}
_BLOCKS = (("transformer_blocks", "double_blocks", BFL_DOUBLE),
           ("single_transformer_blocks", "single_blocks", BFL_SINGLE))  # fmt: skip


def flux_to_kohya(state_dict: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """diffusers-layout FLUX LoRA (`transformer.<module>.lora_A/B.weight`, applied at
    `scale` = lora_alpha / r) -> kohya layout with BFL module names."""
    modules = {}
    for key, tensor in state_dict.items():
        module, _, which = key.removeprefix("transformer.").rpartition(".lora_")
        modules.setdefault(module, {})[which.split(".")[0]] = tensor
    out, used = {}, set()
    for ours, theirs, table in _BLOCKS:
        count = 1 + max(
            (int(m.split(".")[1]) for m in modules if m.startswith(f"{ours}.")), default=-1
        )
        for index in range(count):
            for bfl, parts in table.items():
                names = [f"{ours}.{index}.{part}" for part in parts]
                present = [n for n in names if n in modules]
                if not present:
                    continue
                if len(present) != len(names):
                    raise ValueError(f"{theirs}.{index}.{bfl} needs all of {names}")
                downs = [modules[n]["A"] for n in names]
                ups = [modules[n]["B"] for n in names]
                name = f"lora_unet_{theirs}_{index}_{bfl.replace('.', '_')}"
                out[f"{name}.lora_down.weight"] = torch.cat(downs).contiguous()
                out[f"{name}.lora_up.weight"] = torch.block_diag(*ups).contiguous()
                rank = sum(d.shape[0] for d in downs)
                out[f"{name}.alpha"] = torch.tensor(scale * rank, dtype=torch.float32)
                used.update(names)
    left = sorted(set(modules) - used)
    if left:
        raise ValueError(f"no kohya name for {left[:3]}")
    return out


def sdxl_to_kohya(state_dict: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya

    converted = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(state_dict))
    # diffusers writes alpha = rank (scale 1); keep the scale the LoRA was trained at.
    return {k: v * scale if k.endswith(".alpha") else v for k, v in converted.items()}


TO_KOHYA = {"flux": flux_to_kohya, "sdxl": sdxl_to_kohya}

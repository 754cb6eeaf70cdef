"""Small random models with the real diffusers architectures, built locally.

They let the whole path (weights folder, pipeline loading, every mode, the Cog
server) run offline on a CPU in seconds. Weights come from a fixed seed, so a
build is reproducible; tokenizers are built from an in-memory vocabulary.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.safety import build_tiny_compvis, build_tiny_falcon

# Bump when a builder changes, so stale builds in weights/ are rebuilt.
BUILD_VERSION = "1"
_CHARS = string.ascii_lowercase + string.digits + string.punctuation


def clip_tokenizer(max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer(max_length: int = 512):
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in _CHARS] + [("\u2581" + c, -2.5) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def clip_text_model(vocab_size: int, *, hidden=32, projection=32, with_projection=False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        projection_dim=projection,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


@dataclass(frozen=True)
class FluxDims:
    heads: int
    head_dim: int
    double_blocks: int
    single_blocks: int
    rope_axes: tuple[int, int, int]  # sums to head_dim
    text_dim: int = 32  # T5 width (4096 in FLUX.1)
    pooled_dim: int = 32  # CLIP projection (768 in FLUX.1)


TINY_FLUX = FluxDims(heads=2, head_dim=16, double_blocks=1, single_blocks=1, rope_axes=(4, 6, 6))
# Real FLUX.1 widths (24 heads x 128 = 3072) with 2 blocks: denoising dominates a
# benchmark the way it does at full size, while fitting a CPU machine.
MID_FLUX = FluxDims(
    heads=24, head_dim=128, double_blocks=1, single_blocks=1, rope_axes=(16, 56, 56)
)


def flux_vae():
    from diffusers import AutoencoderKL

    # Same shape rules as FLUX's VAE (4 levels = 8x, 16 latent channels), tiny widths.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
        sample_size=64,
    )


def flux_scheduler(guidance: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if not guidance:  # schnell's scheduler config
        return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FlowMatchEulerDiscreteScheduler(  # dev's scheduler config
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def build_flux(dest: Path, dims: FluxDims, *, guidance: bool, seed: int = 0) -> Path:
    """Write a diffusers FLUX pipeline folder (model_index.json + components) to dest."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    t5 = T5EncoderModel(
        T5Config(
            d_model=dims.text_dim,
            d_ff=dims.text_dim * 2,
            num_heads=4,
            d_kv=dims.text_dim // 4,
            num_layers=2,
            vocab_size=len(tokenizer_2),
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=dims.double_blocks,
        num_single_layers=dims.single_blocks,
        attention_head_dim=dims.head_dim,
        num_attention_heads=dims.heads,
        joint_attention_dim=dims.text_dim,
        pooled_projection_dim=dims.pooled_dim,
        guidance_embeds=guidance,
        axes_dims_rope=list(dims.rope_axes),
    )
    pipe = FluxPipeline(
        scheduler=flux_scheduler(guidance),
        text_encoder=clip_text_model(len(tokenizer), projection=dims.pooled_dim),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        vae=flux_vae(),
        transformer=transformer,
    )
    pipe.save_pretrained(dest)
    return dest


# name in models/manifest.py `build=` -> function(dest) writing the folder.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "tiny-flux": lambda d: build_flux(d, TINY_FLUX, guidance=False),
    "tiny-flux-guidance": lambda d: build_flux(d, TINY_FLUX, guidance=True),
    "mid-flux": lambda d: build_flux(d, MID_FLUX, guidance=False),
    "tiny-compvis": lambda d: build_tiny_compvis(d, flag_all=False),
    "tiny-falcon": lambda d: build_tiny_falcon(d, verdict="normal"),
}

"""The pieces the tiny, mid and mini models are built from: diffusers' and transformers'
real architectures at small widths, and tokenizers from an in-memory vocabulary (no
download). models/weights/builds.py assembles them into pipeline folders; the mini
trainers (models/mini/) and `script/bench --full-size` use them too."""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch

CHARS = string.ascii_lowercase + string.digits + string.punctuation


def clip_tokenizer(max_length: int = 77, words: tuple[str, ...] = ()):
    """A character-level CLIP tokenizer; `words` become single tokens (their BPE merges
    are added), which is how the mini models' tokenizers know their world."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        joined = parts[0]
        for part in parts[1:]:
            if (joined, part) not in merges:
                merges.append((joined, part))
            joined += part
            vocab.setdefault(joined, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def t5_tokenizer(max_length: int = 512, words: tuple[str, ...] = (), chars: str = CHARS):
    """A character-level T5 (unigram) tokenizer; `words` score higher than their
    spelling, so each is one token."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    pieces += [("\u2581" + w, -1.0) for w in words if len(w) > 1]
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


def t5_encoder(dims: FluxDims, vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        d_model=dims.text_dim,
        d_ff=dims.text_dim * 2,
        num_heads=4,
        d_kv=dims.text_dim // 4,
        num_layers=2,
        vocab_size=vocab_size,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def flux_transformer(
    dims: FluxDims, *, guidance: bool, in_channels: int = 64, out_channels: int | None = None
):
    """FLUX's transformer at `dims`. Fill takes 384 input channels (the noise's 64, the
    masked image's 64 and the mask's 256, all packed) and gives out 64."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=dims.double_blocks,
        num_single_layers=dims.single_blocks,
        attention_head_dim=dims.head_dim,
        num_attention_heads=dims.heads,
        joint_attention_dim=dims.text_dim,
        pooled_projection_dim=dims.pooled_dim,
        guidance_embeds=guidance,
        axes_dims_rope=list(dims.rope_axes),
    )


def sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    # stabilityai/stable-diffusion-xl-base-1.0's scheduler config.
    return EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        timestep_spacing="leading",
    )


def sdxl_unet(*, cross_attention_dim: int, pooled_dim: int, time_ids: int):
    from diffusers import UNet2DConditionModel

    # SDXL's conditioning ("text_time": pooled text + embedded size/crop ids; the
    # refiner has 5 ids instead of 6, the aesthetic score replacing the target size)
    # and linear-projection transformers, with 2 levels of tiny widths instead of 3.
    time_embed_dim = 8
    return UNet2DConditionModel(
        sample_size=32,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=time_ids * time_embed_dim + pooled_dim,
        cross_attention_dim=cross_attention_dim,
    )


def sdxl_vae():
    from diffusers import AutoencoderKL

    # 4 levels = 8x and 4 latent channels, like SDXL's VAE. The scaling factor brings
    # this encoder's latents (std ~0.25) to about unit variance, the job SDXL's 0.13025
    # does for its own, so image latents and the sampler's noise have comparable sizes.
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        scaling_factor=4.0,
        sample_size=256,
    )
    # A trained VAE's posterior is nearly deterministic; a random one's has a standard
    # deviation near 1, which would bury the input image of img2img/inpainting in noise.
    with torch.no_grad():  # quant_conv's second half of channels is the log-variance
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-20.0)
    return vae


# Redux's image encoder at tiny widths (28 px, 4 patches); FLUX.1-Redux-dev's is SigLIP
# so400m (tools/bench/full.py).
TINY_SIGLIP = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=28,
    patch_size=14,
)


def redux_prior(siglip: dict, text_dim: int):
    """FLUX.1 Redux's parts as diffusers holds them (FluxPriorReduxPipeline, no text
    encoders): a SigLIP vision model of `siglip`'s sizes, its processor, and the redux
    embedder into the T5 width `text_dim`."""
    from diffusers import FluxPriorReduxPipeline
    from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    side = siglip["image_size"]
    return FluxPriorReduxPipeline(
        image_encoder=SiglipVisionModel(SiglipVisionConfig(**siglip)),
        feature_extractor=SiglipImageProcessor(size={"height": side, "width": side}),
        image_embedder=ReduxImageEncoder(redux_dim=siglip["hidden_size"], txt_in_features=text_dim),
    )


# Depth Anything at tiny widths: a 4-layer DINOv2 at 56 px. depth-anything-large-hf's
# sizes are in tools/bench/full.py.
TINY_DEPTH_ANYTHING = dict(
    backbone=dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        out_indices=[1, 2, 3, 4],
    ),
    neck_hidden_sizes=[8, 16, 32, 32],
    fusion_hidden_size=16,
    head_hidden_size=8,
)


def depth_anything(dims: dict) -> tuple:
    """A Depth Anything model of `dims`' sizes and its image processor (DPT's, keeping the
    aspect ratio, sides in multiples of the 14 px patches), as AutoModelForDepthEstimation
    and AutoImageProcessor load them."""
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessorPil,
    )

    backbone = dims["backbone"]
    config = DepthAnythingConfig(
        backbone_config=Dinov2Config(
            **backbone,
            patch_size=14,
            out_features=[f"stage{i}" for i in backbone["out_indices"]],
            reshape_hidden_states=False,
        ),
        neck_hidden_sizes=dims["neck_hidden_sizes"],
        fusion_hidden_size=dims["fusion_hidden_size"],
        head_hidden_size=dims["head_hidden_size"],
        reassemble_hidden_size=backbone["hidden_size"],
        patch_size=14,
    )
    side = backbone["image_size"]
    processor = DPTImageProcessorPil(
        size={"height": side, "width": side},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return DepthAnythingForDepthEstimation(config).eval(), processor

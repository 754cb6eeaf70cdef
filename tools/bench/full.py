"""`script/bench --full-size`: the real FLUX.1 (with Fill's, Kontext's, Canny's, Depth's and
Redux's: Depth Anything large and SigLIP so400m beside them) and SDXL architectures with
random weights (no download), built on the GPU, timed at 1024x1024 the way the predictors
run them: eager, compiled, and compiled with fp8, with peak GPU memory.

Random weights draw noise but cost exactly what trained ones do. Text encoders, VAE and
transformer/UNet have their published sizes; tokenizers are the tiny local ones (the text
length the encoders see is the real one: 256/512 T5 tokens, 77 CLIP tokens). The safety
checker is left out (its share is measured by `script/bench --stages`).

`SMOKE` dims build the same code at toy size, so a CPU test can run this path.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import replace

import torch
from PIL import Image

from models.serving.families import FAMILIES
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from models.weights.parts import (
    TINY_DEPTH_ANYTHING,
    TINY_SIGLIP,
    clip_tokenizer,
    depth_anything,
    flux_scheduler,
    redux_prior,
    sdxl_scheduler,
    t5_tokenizer,
)
from tools.bench.inputs import picture_inputs, size_inputs

CLIP_L = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    projection_dim=768,
    hidden_act="quick_gelu",
    vocab_size=49408,
)
CLIP_G = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=20,
    projection_dim=1280,
    hidden_act="gelu",
    vocab_size=49408,
)
T5_XXL = dict(
    d_model=4096,
    d_ff=10240,
    d_kv=64,
    num_heads=64,
    num_layers=24,
    vocab_size=32128,
    feed_forward_proj="gated-gelu",
)
FLUX = dict(
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    axes_dims_rope=[16, 56, 56],
)
FLUX_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
SDXL_UNET = dict(
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)
SDXL_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    scaling_factor=0.13025,
)
# FLUX.1-Redux-dev's image encoder (SigLIP so400m at 384 px: 729 tokens).
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=27,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
)
# depth-anything-large-hf (a DINOv2 ViT-L backbone at 518 px).
DEPTH_ANYTHING_LARGE = dict(
    backbone=dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        image_size=518,
        out_indices=[5, 12, 18, 24],
    ),
    neck_hidden_sizes=[256, 512, 1024, 1024],
    fusion_hidden_size=256,
    head_hidden_size=32,
)
FULL = {
    "siglip": SIGLIP_SO400M,
    "depth_anything": DEPTH_ANYTHING_LARGE,
    "clip_l": CLIP_L,
    "clip_g": CLIP_G,
    "t5": T5_XXL,
    "flux": FLUX,
    "flux_vae": FLUX_VAE,
    "sdxl_unet": SDXL_UNET,
    "sdxl_vae": SDXL_VAE,
}
_SMALL_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    projection_dim=32,
    hidden_act="gelu",
    vocab_size=1000,
)
SMOKE = {
    "siglip": TINY_SIGLIP,
    "depth_anything": TINY_DEPTH_ANYTHING,
    "clip_l": _SMALL_CLIP,
    "clip_g": _SMALL_CLIP,
    "t5": dict(
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_heads=4,
        num_layers=1,
        vocab_size=1000,
        feed_forward_proj="gated-gelu",
    ),
    "flux": dict(
        FLUX,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 6, 6],
    ),
    "flux_vae": dict(
        FLUX_VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ),
    "sdxl_unet": dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        transformer_layers_per_block=(1, 1),
        attention_head_dim=(2, 4),
        cross_attention_dim=64,
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        norm_num_groups=8,
    ),
    "sdxl_vae": dict(
        SDXL_VAE, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    ),
}


def _clip(dims: dict, *, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        **dims, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def flux_components(dims: dict, *, guidance: bool, pipeline: str = "FluxPipeline"):
    """FLUX's components as `pipeline` holds them; Fill's transformer also reads the
    masked picture and the mask (384 input channels), Canny's and Depth's the control map
    (128)."""
    import diffusers
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    channels = dict(in_channels=64)
    if pipeline in ("FluxFillPipeline", "FluxControlPipeline"):
        channels = dict(in_channels=384 if "Fill" in pipeline else 128, out_channels=64)
    return getattr(diffusers, pipeline)(
        scheduler=flux_scheduler(guidance),
        text_encoder=_clip(dims["clip_l"], projection=False),
        tokenizer=clip_tokenizer(),
        text_encoder_2=T5EncoderModel(T5Config(**dims["t5"], pad_token_id=0, eos_token_id=1)),
        tokenizer_2=t5_tokenizer(),
        vae=AutoencoderKL(
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            **dims["flux_vae"],
        ),
        transformer=FluxTransformer2DModel(
            patch_size=1, guidance_embeds=guidance, **channels, **dims["flux"]
        ),
    )


def sdxl_components(dims: dict):
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel

    from models.sdxl.engine import SDXLComponents

    levels = len(dims["sdxl_unet"]["block_out_channels"])
    unet = UNet2DConditionModel(
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        use_linear_projection=True,
        addition_embed_type="text_time",
        **dims["sdxl_unet"],
    )
    vae = AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        **dims["sdxl_vae"],
    )
    base = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=_clip(dims["clip_l"], projection=False),
        text_encoder_2=_clip(dims["clip_g"], projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=sdxl_scheduler(),
        add_watermarker=False,
    )
    return SDXLComponents(base)


def build(model_name: str, dims: dict, device: str, dtype: torch.dtype):
    """Random components of `model_name`'s architecture, and of the models it loads beside
    them (ModelSpec.extras: {entry: model} as models/engine/extras.py gives them), made
    directly on `device`."""
    spec = get_spec(model_name)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            extras = {}
            if spec.depth_estimator:
                extras[spec.depth_estimator] = depth_anything(dims["depth_anything"])
            if spec.redux:
                text_dim = dims["t5"]["d_model"]
                extras[spec.redux] = redux_prior(dims["siglip"], text_dim)
            if spec.family == "flux":
                guidance = spec.guidance is not None
                pipeline = spec.pipelines[0][1]
                return flux_components(dims, guidance=guidance, pipeline=pipeline), extras
            return sdxl_components(dims), extras
    finally:
        torch.set_default_dtype(previous)


# name: (COMPILE, FP8, go_fast, step_cache). Kontext's go_fast includes the step cache.
CONFIGS = {
    "eager": ("off", "off", False, False),
    "compiled": ("on", "off", True, False),
    "compiled_fp8": ("on", "auto", True, False),
    "compiled_fp8_step_cache": ("on", "auto", True, True),
}


def bench_full(
    model_name: str,
    *,
    runs: int,
    dims: dict = FULL,
    size: int = 1024,
    steps: int | None = None,
    configs: tuple[str, ...] = tuple(CONFIGS),
) -> dict:
    spec = get_spec(model_name)
    family = FAMILIES[spec.interface]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, spec.dtype) if device == "cuda" else torch.float32
    started = time.perf_counter()
    components, extras = build(model_name, dims, device, dtype)
    result = {
        "model": model_name,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "size": f"{size}x{size}",
        "build_s": round(time.perf_counter() - started, 1),
    }
    steps = steps or spec.default_steps
    megapixels = {1024: "1", 512: "0.25"}[size]
    sizes = size_inputs(spec.interface, "1:1", megapixels)
    sizes |= picture_inputs(spec.interface, "1:1", megapixels)
    for name in configs:
        compile_it, fp8, go_fast, step_cache = CONFIGS[name]
        if step_cache and not spec.step_cache:
            continue  # schnell, SDXL: no step cache
        settings = replace(
            load_settings(), device=device, safety_checker=False, compile=compile_it, fp8=fp8
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        model = DiffusionModel(spec, settings, components=components, extras=extras)
        cache = {"step_cache": True} if step_cache else {}
        request = family.inputs(
            prompt="a cat in a hat",
            seed=1,
            num_inference_steps=steps,
            go_fast=go_fast,
            **cache,
            **sizes,
        )
        # Warm-up beyond setup's (allocator, cuDNN choices); its picture has the size drawn
        # (Kontext draws at about 1 megapixel whatever `size` says).
        with Image.open(model.predict(request)[0]) as drawn:
            result["size"] = f"{drawn.width}x{drawn.height}"
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            model.predict(request)
            times.append(time.perf_counter() - began)
        result[f"{name}_s"] = round(statistics.median(times), 3)
        path = model.engine.fast_plan.describe() if go_fast else "eager"
        cached = model.plan(spec, request).step_cache
        result[f"{name}_path"] = path + (", step cache" if cached else "")
        if device == "cuda":
            result[f"{name}_peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    result["steps"] = steps
    return result

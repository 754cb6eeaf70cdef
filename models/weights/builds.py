"""Weights built locally instead of downloaded: the manifest's `build` entries (tiny and
mid random models with the real architectures, tiny safety checkers and captioner, and
the mini models copied from the committed mini/ folder).

They let the whole path (weights folder, pipeline loading, every mode, the Cog server)
run offline on a CPU in seconds. Random weights come from a fixed seed, so a build is
reproducible.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from models.settings import REPO_ROOT
from models.weights.parts import (
    CHARS,
    MID_FLUX,
    TINY_DEPTH_ANYTHING,
    TINY_FLUX,
    TINY_SIGLIP,
    FluxDims,
    clip_text_model,
    clip_tokenizer,
    depth_anything,
    flux_scheduler,
    flux_transformer,
    flux_vae,
    redux_prior,
    sdxl_scheduler,
    sdxl_unet,
    sdxl_vae,
    t5_encoder,
    t5_tokenizer,
)

# Bump when a builder changes, so stale builds in weights/ are rebuilt.
BUILD_VERSION = "1"


def build_flux(
    dest: Path,
    dims: FluxDims,
    *,
    guidance: bool,
    seed: int = 0,
    pipeline: str = "FluxPipeline",
    in_channels: int = 64,
) -> Path:
    """Write a diffusers FLUX pipeline folder (model_index.json + components) to dest, as
    `pipeline` saves it (the class the real variant's folder names). `in_channels` beyond
    the noise's 64: Fill's transformer also reads the masked image and the mask (384),
    Canny's and Depth's the control map (128); all give out 64."""
    import diffusers

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    t5 = t5_encoder(dims, len(tokenizer_2))
    out = dict(in_channels=in_channels, out_channels=64) if in_channels != 64 else {}
    transformer = flux_transformer(dims, guidance=guidance, **out)
    pipe = getattr(diffusers, pipeline)(
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


def build_flux_redux(dest: Path, dims: FluxDims = TINY_FLUX, *, seed: int = 0) -> Path:
    """A FLUX.1-Redux-dev folder of tiny widths: a SigLIP vision model with its processor,
    and the redux embedder into `dims`' text width."""
    torch.manual_seed(seed)
    redux_prior(TINY_SIGLIP, dims.text_dim).save_pretrained(dest)
    return dest


def build_tiny_depth_anything(dest: Path, *, seed: int = 0) -> Path:
    """A Depth Anything of tiny widths and its processor, as depth-anything-large-hf holds
    them (AutoModelForDepthEstimation and AutoImageProcessor load both)."""
    torch.manual_seed(seed)
    model, processor = depth_anything(TINY_DEPTH_ANYTHING)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    return Path(dest)


def build_sdxl(dest: Path, *, seed: int = 0) -> Path:
    """Write a diffusers SDXL base folder: two CLIP encoders, UNet, VAE, Euler scheduler."""
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    text_encoder = clip_text_model(len(tokenizer), hidden=32)
    text_encoder_2 = clip_text_model(len(tokenizer), hidden=32, with_projection=True)
    unet = sdxl_unet(cross_attention_dim=64, pooled_dim=32, time_ids=6)
    pipe = StableDiffusionXLPipeline(
        vae=sdxl_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=sdxl_scheduler(),
        add_watermarker=False,
    )
    pipe.save_pretrained(dest)
    return dest


def build_sdxl_refiner(dest: Path, *, seed: int = 1) -> Path:
    """Write an SDXL refiner folder without vae/ and text_encoder_2/ weights, like
    Replicate's refiner tar: they are shared with the base at load time."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=sdxl_vae(),
        text_encoder=None,
        text_encoder_2=clip_text_model(len(tokenizer), hidden=32, with_projection=True),
        tokenizer=None,
        tokenizer_2=tokenizer,
        unet=sdxl_unet(cross_attention_dim=32, pooled_dim=32, time_ids=5),
        scheduler=sdxl_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    pipe.save_pretrained(dest)
    for shared in ("vae", "text_encoder_2"):
        shutil.rmtree(Path(dest) / shared)
    return dest


def build_captioner(dest: Path, *, seed: int = 0) -> Path:
    """A BLIP captioner folder (model, image processor, tokenizer) of tiny widths."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *CHARS]
    (dest / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(dest / "vocab.txt"), bos_token="[DEC]")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(small, vocab_size=len(words), encoder_hidden_size=32, bos_token_id=5,
                pad_token_id=0, sep_token_id=3, max_position_embeddings=64)  # fmt: skip
    config = BlipConfig(
        text_config=text, vision_config=dict(small, image_size=32, patch_size=16), projection_dim=32
    )
    BlipForConditionalGeneration(config).save_pretrained(dest)
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dest)
    return dest


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


# The mini models' trained weights, committed (script/train-mini writes them).
MINI_DIR = REPO_ROOT / "mini"


def copy_mini(name: str) -> Callable[[Path], Path]:
    def build(dest: Path) -> Path:
        source = MINI_DIR / name
        if not (source / "model_index.json").is_file():
            raise FileNotFoundError(f"{source} is missing: run script/train-mini to make it.")
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return dest

    return build


def build_version(build: str) -> str:
    """What a build in weights/ must have been made from to be current: this module's
    version, and for a mini model a digest of its committed files."""
    if not build.startswith("mini-"):
        return BUILD_VERSION
    digest = hashlib.sha256()
    for path in sorted((MINI_DIR / build.removeprefix("mini-")).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(MINI_DIR).as_posix().encode() + path.read_bytes())
    return f"{BUILD_VERSION}:{digest.hexdigest()[:16]}"


# name in models/weights/manifest.py `build=` -> function(dest) writing the folder.
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "tiny-flux": lambda d: build_flux(d, TINY_FLUX, guidance=False),
    "tiny-flux-guidance": lambda d: build_flux(d, TINY_FLUX, guidance=True),
    "tiny-flux-fill": lambda d: build_flux(
        d, TINY_FLUX, guidance=True, pipeline="FluxFillPipeline", in_channels=384
    ),
    "tiny-flux-control": lambda d: build_flux(
        d, TINY_FLUX, guidance=True, pipeline="FluxControlPipeline", in_channels=128
    ),
    "tiny-flux-redux": build_flux_redux,
    "tiny-depth-anything": build_tiny_depth_anything,
    "tiny-flux-kontext": lambda d: build_flux(
        d, TINY_FLUX, guidance=True, pipeline="FluxKontextPipeline"
    ),
    "mid-flux": lambda d: build_flux(d, MID_FLUX, guidance=False),
    "tiny-sdxl": build_sdxl,
    "tiny-sdxl-refiner": build_sdxl_refiner,
    "tiny-compvis": lambda d: build_tiny_compvis(d, flag_all=False),
    "tiny-falcon": lambda d: build_tiny_falcon(d, verdict="normal"),
    "tiny-captioner": build_captioner,
    "mini-flux-schnell": copy_mini("flux-schnell"),
    "mini-sdxl": copy_mini("sdxl"),
    "mini-flux-kontext": copy_mini("flux-kontext"),
}

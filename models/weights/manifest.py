"""Where every set of weights comes from: declared data, read by models/weights/resolver.py.

Each entry is a folder `weights/<name>` once resolved. Sources are tried in
order. `build` entries are generated locally by models/weights/builds.py (random weights
from a fixed seed) and never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

_CDN = "https://weights.replicate.delivery/default"


@dataclass(frozen=True)
class Source:
    # An HTTPS URL to a .tar (extracted) or a single file (kept by name), and its sha256
    # when known: checked before use. The CDN tars below have none recorded yet: every
    # download logs the sha256 it got, to be copied here once checked. Hugging Face files
    # are always checked against the Hub's own checksums.
    url: str | None = None
    sha256: str | None = None
    # Or a Hugging Face repo at a revision; allow_patterns limits the files.
    hf_repo: str | None = None
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    # Where the weights sit inside the download (a glob), when not at its top level.
    subdir: str = ""

    def describe(self) -> str:
        if self.url:
            return self.url
        return f"huggingface.co/{self.hf_repo}@{self.revision}"


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    sources: tuple[Source, ...] = ()
    # Name of a local builder in models/weights/builds.py: no download, built on first use.
    build: str | None = None
    # Needs an accepted licence on Hugging Face and HF_TOKEN.
    gated: bool = False
    licence: str = ""
    # A file every complete copy has at its top level: checked before a download is
    # moved into place, and on every use of an existing folder.
    marker: str = "model_index.json"
    # Components named in model_index.json whose weights this entry does not carry: the
    # engine takes them from another entry (models/weights/completeness.py skips them).
    borrowed: tuple[str, ...] = ()
    # For a model loaded beside a pipeline (models/engine/extras.py): how it loads.
    loader: str | None = None


DIFFUSERS_FILES = ("*.json", "*.txt", "*.model", "**/*.safetensors", "**/*.json", "**/*.txt")
# Half the download of the full-precision files; loading.load_pipeline asks for the fp16
# variant when a folder holds it.
_SDXL_FP16 = ("*.json", "**/*.json", "**/*.txt", "**/*.fp16.safetensors")

MANIFEST: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        WeightsEntry(
            "flux-schnell",
            sources=(
                Source(url=f"{_CDN}/black-forest-labs/FLUX.1-schnell/slim.tar"),
                Source(hf_repo="black-forest-labs/FLUX.1-schnell", allow_patterns=DIFFUSERS_FILES),
            ),
            licence="Apache-2.0",
        ),
        WeightsEntry(
            "flux-dev",
            sources=(
                # The tar holds a FLUX.1-dev/ folder (cog-flux extracts it one level up).
                Source(url=f"{_CDN}/black-forest-labs/FLUX.1-dev/files.tar", subdir="FLUX.1-dev"),
                Source(hf_repo="black-forest-labs/FLUX.1-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        # No Replicate CDN tar of these in diffusers layout is known: cog-flux's CDN holds
        # Fill only as one BFL-format transformer file. From the Hub, gated like dev.
        WeightsEntry(
            "flux-fill-dev",
            sources=(
                Source(hf_repo="black-forest-labs/FLUX.1-Fill-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        WeightsEntry(
            "flux-kontext-dev",
            sources=(
                Source(
                    hf_repo="black-forest-labs/FLUX.1-Kontext-dev", allow_patterns=DIFFUSERS_FILES
                ),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        WeightsEntry(
            "flux-canny-dev",
            sources=(
                Source(hf_repo="black-forest-labs/FLUX.1-Canny-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        WeightsEntry(
            "flux-depth-dev",
            sources=(
                Source(hf_repo="black-forest-labs/FLUX.1-Depth-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        WeightsEntry(
            "flux-krea-dev",
            sources=(
                Source(hf_repo="black-forest-labs/FLUX.1-Krea-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        # Redux's SigLIP image encoder, its processor and the redux embedder (about 1 GB);
        # the BFL-format file at the repo's top level is left out (DIFFUSERS_FILES' patterns
        # for weights look in folders only). The base model is a separate entry.
        WeightsEntry(
            "flux-redux",
            sources=(
                Source(hf_repo="black-forest-labs/FLUX.1-Redux-dev", allow_patterns=DIFFUSERS_FILES),
            ),
            gated=True,
            loader="flux-redux",
            licence="FLUX.1 [dev] Non-Commercial License",
        ),
        # The depth estimator BFL's reference code turns Depth [dev]'s control images into
        # depth maps with (Depth Anything, large).
        WeightsEntry(
            "depth-anything",
            sources=(
                Source(
                    hf_repo="LiheYoung/depth-anything-large-hf",
                    allow_patterns=("*.json", "model.safetensors"),
                ),
            ),
            marker="config.json",
            loader="depth-estimator",
            licence="Apache-2.0",
        ),
        WeightsEntry(
            "sdxl",
            sources=(
                # Base 1.0 as cog-sdxl ships it.
                Source(url=f"{_CDN}/sdxl/sdxl-vae-upcast-fix.tar"),
                Source(
                    hf_repo="stabilityai/stable-diffusion-xl-base-1.0", allow_patterns=_SDXL_FP16
                ),
            ),
            licence="CreativeML Open RAIL++-M",
        ),
        WeightsEntry(
            "sdxl-refiner",
            sources=(
                # No VAE and no text encoder: the engine passes the base's to the refiner.
                Source(url=f"{_CDN}/sdxl/refiner-no-vae-no-encoder-1.0.tar"),
                Source(
                    hf_repo="stabilityai/stable-diffusion-xl-refiner-1.0",
                    allow_patterns=("*.json", "**/*.json", "**/*.txt", "unet/*.fp16.safetensors"),
                ),
            ),
            borrowed=("vae", "text_encoder_2"),
            licence="CreativeML Open RAIL++-M",
        ),
        WeightsEntry(
            "safety-checker",
            sources=(
                Source(url=f"{_CDN}/sdxl/safety-1.0.tar"),
                Source(
                    hf_repo="CompVis/stable-diffusion-safety-checker",
                    allow_patterns=("*.json", "model.safetensors"),
                ),
            ),
            marker="config.json",
            loader="compvis-safety",
            licence="not stated on its model card (CompVis/stable-diffusion-safety-checker)",
        ),
        WeightsEntry(
            "falcon-nsfw",
            sources=(
                # A Hugging Face cache folder (cog-flux passes it as cache_dir=).
                Source(
                    url=f"{_CDN}/falconai/nsfw-image-detection.tar",
                    subdir="models--Falconsai--nsfw_image_detection/snapshots/*",
                ),
                Source(
                    hf_repo="Falconsai/nsfw_image_detection",
                    allow_patterns=("*.json", "model.safetensors"),
                ),
            ),
            marker="config.json",
            loader="vit-classifier",
            licence="Apache-2.0",
        ),
        WeightsEntry(
            "captioner",
            sources=(
                Source(
                    hf_repo="Salesforce/blip-image-captioning-large",
                    allow_patterns=("*.json", "*.txt", "model.safetensors"),
                ),
            ),
            marker="config.json",
            licence="BSD-3-Clause",
        ),
        WeightsEntry("tiny-flux-schnell", build="tiny-flux"),
        WeightsEntry("tiny-flux-dev", build="tiny-flux-guidance"),
        WeightsEntry("tiny-flux-fill-dev", build="tiny-flux-fill"),
        WeightsEntry("tiny-flux-kontext-dev", build="tiny-flux-kontext"),
        WeightsEntry("tiny-flux-control-dev", build="tiny-flux-control"),
        WeightsEntry("tiny-flux-redux", build="tiny-flux-redux", loader="flux-redux"),
        WeightsEntry(
            "tiny-depth-anything",
            build="tiny-depth-anything",
            marker="config.json",
            loader="depth-estimator",
        ),
        WeightsEntry("mid-flux-schnell", build="mid-flux"),
        WeightsEntry("mini-flux-schnell", build="mini-flux-schnell"),
        WeightsEntry("mini-sdxl", build="mini-sdxl"),
        WeightsEntry("mini-flux-kontext", build="mini-flux-kontext"),
        WeightsEntry("tiny-sdxl", build="tiny-sdxl"),
        WeightsEntry(
            "tiny-sdxl-refiner", build="tiny-sdxl-refiner", borrowed=("vae", "text_encoder_2")
        ),
        # Tiny checkers that flag nothing: tests build stricter ones themselves.
        WeightsEntry("tiny-safety-checker", build="tiny-compvis", loader="compvis-safety"),
        WeightsEntry("tiny-falcon-nsfw", build="tiny-falcon", loader="vit-classifier"),
        # A random BLIP: captions are noise, the captioning path is real.
        WeightsEntry("tiny-captioner", build="tiny-captioner", marker="config.json"),
    )
}


def get_entry(name: str) -> WeightsEntry:
    try:
        return MANIFEST[name]
    except KeyError:
        known = ", ".join(sorted(MANIFEST))
        raise ValueError(
            f"No weights named {name!r} in models/weights/manifest.py: {known}."
        ) from None

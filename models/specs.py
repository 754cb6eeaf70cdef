"""One frozen spec per deployable variant: everything that differs is data here.

Code reads these fields instead of comparing variant names. The tiny variants
share predictor classes and input schemas with the real ones; only their
weights (built locally from random numbers) and dtype differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # Architecture family ("flux" or "sdxl"): which LoRAs fit, how training treats it.
    family: str
    # The inputs, plan() and engine a request goes through: a Family registered in
    # models/serving/families.py ("flux", "flux-fill", "flux-kontext", "flux-control",
    # "flux-redux", "sdxl").
    interface: str
    # Class in predict.py that serves this variant (cog.yaml's `run:`).
    predictor: str
    # Manifest entry holding the main weights.
    weights: str
    default_steps: int
    max_steps: int
    # Default guidance; None means the model takes no guidance input (schnell).
    guidance: float | None
    max_guidance: float
    # Prompt tokens the second text encoder sees (T5 for FLUX).
    max_sequence_length: int
    # Output sides must be multiples of this (VAE factor x patch size).
    size_multiple: int
    # Compute dtype on a GPU; tiny variants run in float32 everywhere.
    dtype: str
    # The modes this variant serves and the diffusers pipeline class of each, the first
    # loaded from the weights, the others derived from it sharing its components. plan()
    # sets a job's mode; a mode missing here is refused.
    pipelines: tuple[tuple[str, str], ...]
    # Fewest num_inference_steps accepted (Kontext's schema starts at 4).
    min_steps: int = 1
    # Manifest entry of an optional refiner (SDXL).
    refiner: str | None = None
    # What a single-file checkpoint in MODEL_WEIGHTS holds: the whole "pipeline" (SDXL
    # fine-tunes) or only the "transformer" (FLUX fine-tunes; the rest is this variant's).
    single_file: str = "pipeline"
    # Default of the `scheduler` input; None: the model has no scheduler choice (FLUX).
    scheduler: str | None = None
    # Manifest entries of the two safety checkers: CompVis, then Falcons.ai ViT.
    safety: tuple[str, str] = ("safety-checker", "falcon-nsfw")
    # Manifest entry of the image captioner training uses for images without captions.
    captioner: str | None = "captioner"
    description: str = ""
    # Layers (name prefixes) of the transformer/UNet that go_fast keeps out of fp8: small,
    # precision-sensitive embedders and output layers.
    fp8_keep: tuple[str, ...] = ()
    # The mini models draw at most this many pixels per side (their training range):
    # a larger request is denoised at the largest size of its aspect ratio within it,
    # then upscaled to the size asked for, and the log says so. None: no limit.
    max_native_side: int | None = None
    # Control models (Canny, Depth): how a control image becomes the map the model follows
    # when control_preprocess is on: "canny" (edges, by kornia) or "depth" (a depth map by
    # the depth_estimator). None: not a control model.
    control: str | None = None
    # Manifest entry of the depth estimator Depth's preprocessing runs.
    depth_estimator: str | None = None
    # Manifest entry of Redux's image encoder and embedder, loaded on top of the base
    # model's weights (which it shares: its prompt goes through the base's text encoders).
    redux: str | None = None
    # The step_cache input (models/engine/caching.py): transformers with 20 or more
    # default steps. SDXL's UNet has none: diffusers' step caches skip blocks that return
    # one tensor, and the UNet's return their skip connections too.
    step_cache: bool = False
    # go_fast=true turns the step cache on too (Kontext, as Replicate's go_fast does).
    go_fast_step_cache: bool = False

    @property
    def extras(self) -> tuple[str, ...]:
        """Manifest entries of the models loaded beside the pipeline (models/engine/extras.py)
        that requests need: a depth estimator, Redux's image encoder."""
        return tuple(e for e in (self.depth_estimator, self.redux) if e)

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(mode for mode, _ in self.pipelines)

    def pipeline(self, mode: str) -> str:
        """The diffusers pipeline class (its name) that runs `mode`."""
        return dict(self.pipelines)[mode]

    def weight_entries(self, *, safety: bool = True) -> tuple[str, ...]:
        """Every manifest entry this variant loads at setup."""
        refiner = (self.refiner,) if self.refiner else ()
        return (self.weights, *refiner, *self.extras, *(self.safety if safety else ()))


def _flux(name: str, **kw) -> ModelSpec:
    defaults = dict(
        family="flux",
        interface="flux",
        max_guidance=10.0,
        size_multiple=16,
        dtype="bfloat16",
        single_file="transformer",
        fp8_keep=("x_embedder", "context_embedder", "time_text_embed", "norm_out", "proj_out"),
        pipelines=(
            ("txt2img", "FluxPipeline"),
            ("img2img", "FluxImg2ImgPipeline"),
            ("inpaint", "FluxInpaintPipeline"),
        ),
    )
    return ModelSpec(name=name, **{**defaults, **kw})


def _sdxl(name: str, **kw) -> ModelSpec:
    defaults = dict(
        family="sdxl",
        interface="sdxl",
        predictor="SDXLPredictor",
        default_steps=30,
        max_steps=100,
        guidance=7.5,
        max_guidance=20.0,
        max_sequence_length=77,  # CLIP's window; SDXL has no T5
        size_multiple=8,  # the VAE's factor; the UNet needs no more
        dtype="float16",
        scheduler="K_EULER",
        fp8_keep=("time_embedding", "add_embedding"),
        pipelines=(
            ("txt2img", "StableDiffusionXLPipeline"),
            ("img2img", "StableDiffusionXLImg2ImgPipeline"),
            ("inpaint", "StableDiffusionXLInpaintPipeline"),
        ),
    )
    return ModelSpec(name=name, **{**defaults, **kw})


_TINY_SAFETY = ("tiny-safety-checker", "tiny-falcon-nsfw")
_TINY = dict(dtype="float32", safety=_TINY_SAFETY, captioner="tiny-captioner")

_SCHNELL = dict(
    predictor="FluxSchnellPredictor",
    default_steps=4,
    max_steps=4,
    guidance=None,
    max_sequence_length=256,
)
_DEV = dict(
    predictor="FluxDevPredictor",
    default_steps=28,
    max_steps=50,
    guidance=3.0,
    max_sequence_length=512,
    step_cache=True,
)

# FLUX.1 Fill [dev]: the transformer takes the masked image and the mask beside the noise
# (384 input channels); one mode, and sides in multiples of 32 as cog-flux gives them.
_FILL = dict(
    step_cache=True,
    interface="flux-fill",
    predictor="FluxFillPredictor",
    default_steps=28,
    max_steps=50,
    guidance=30.0,
    max_guidance=100.0,
    max_sequence_length=512,
    size_multiple=32,
    pipelines=(("fill", "FluxFillPipeline"),),
)
# FLUX.1 Kontext [dev]: dev's architecture, the input image's tokens beside the noise's;
# a mask edits one region only (FluxKontextInpaintPipeline, on the same components).
_KONTEXT = dict(
    step_cache=True,
    go_fast_step_cache=True,
    interface="flux-kontext",
    predictor="FluxKontextPredictor",
    default_steps=28,
    min_steps=4,
    max_steps=50,
    guidance=2.5,
    max_sequence_length=512,
    pipelines=(("edit", "FluxKontextPipeline"), ("edit-region", "FluxKontextInpaintPipeline")),
)

# FLUX.1 Canny [dev] and Depth [dev]: dev's architecture, the control map's latents beside
# the noise's (128 input channels); sides in multiples of 16 as cog-flux gives them.
_CONTROL = dict(
    step_cache=True,
    interface="flux-control",
    default_steps=28,
    max_steps=50,
    max_guidance=100.0,
    max_sequence_length=512,
    pipelines=(("control", "FluxControlPipeline"),),
)
_CANNY = dict(_CONTROL, predictor="FluxCannyPredictor", guidance=30.0, control="canny")
_DEPTH = dict(
    _CONTROL,
    predictor="FluxDepthPredictor",
    guidance=10.0,
    control="depth",
    depth_estimator="depth-anything",
)
# FLUX.1 Redux: a picture's SigLIP features, through the redux embedder, join the prompt's
# tokens; schnell or dev draw from them (the text-to-image pipeline, given embeddings).
_REDUX = dict(interface="flux-redux", pipelines=(("redux", "FluxPipeline"),), redux="flux-redux")

# Trained from scratch on a small synthetic world by script/train-mini (mini/, committed).
_MINI = dict(_TINY, max_native_side=128)

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _flux(
            "flux-schnell",
            weights="flux-schnell",
            description="FLUX.1 [schnell]: 4-step distilled text-to-image (Apache-2.0).",
            **_SCHNELL,
        ),
        _flux(
            "flux-dev",
            weights="flux-dev",
            description="FLUX.1 [dev]: guidance-distilled, 28 steps (non-commercial, gated).",
            **_DEV,
        ),
        _flux(
            "flux-fill-dev",
            weights="flux-fill-dev",
            description=(
                "FLUX.1 Fill [dev]: inpainting and outpainting from an image and a mask "
                "(non-commercial, gated)."
            ),
            **_FILL,
        ),
        _flux(
            "flux-kontext-dev",
            weights="flux-kontext-dev",
            description=(
                "FLUX.1 Kontext [dev]: edits a picture as an instruction says "
                "(non-commercial, gated)."
            ),
            **_KONTEXT,
        ),
        _flux(
            "flux-canny-dev",
            weights="flux-canny-dev",
            description=(
                "FLUX.1 Canny [dev]: a new picture following the edges of a control image "
                "(non-commercial, gated)."
            ),
            **_CANNY,
        ),
        _flux(
            "flux-depth-dev",
            weights="flux-depth-dev",
            description=(
                "FLUX.1 Depth [dev]: a new picture following the depth map of a control image "
                "(non-commercial, gated)."
            ),
            **_DEPTH,
        ),
        _flux(
            "flux-redux-schnell",
            weights="flux-schnell",
            description=(
                "FLUX.1 Redux on schnell: variations of a picture, optionally steered by a "
                "prompt (Redux's encoder: non-commercial, gated)."
            ),
            **{**_SCHNELL, **_REDUX, "predictor": "FluxReduxSchnellPredictor"},
        ),
        _flux(
            "flux-redux-dev",
            weights="flux-dev",
            description=(
                "FLUX.1 Redux on dev: variations of a picture, optionally steered by a prompt "
                "(non-commercial, gated)."
            ),
            **{**_DEV, **_REDUX, "predictor": "FluxReduxDevPredictor"},
        ),
        _flux(
            "flux-krea-dev",
            weights="flux-krea-dev",
            description=(
                "FLUX.1 Krea [dev]: dev fine-tuned by Krea for natural, less 'AI-looking' "
                "photos; dev's inputs (non-commercial, gated)."
            ),
            **_DEV,
        ),
        _flux(
            "tiny-flux-canny-dev",
            weights="tiny-flux-control-dev",
            description="Random tiny FLUX Canny with flux-canny-dev's inputs, for offline tests.",
            **{**_CANNY, **_TINY},
        ),
        _flux(
            "tiny-flux-depth-dev",
            weights="tiny-flux-control-dev",
            description="Random tiny FLUX Depth and depth estimator, flux-depth-dev's inputs.",
            **{**_DEPTH, **_TINY, "depth_estimator": "tiny-depth-anything"},
        ),
        _flux(
            "tiny-flux-redux-schnell",
            weights="tiny-flux-schnell",
            description="Random tiny FLUX schnell and Redux encoder, flux-redux-schnell's inputs.",
            **{
                **_SCHNELL,
                **_REDUX,
                **_TINY,
                "predictor": "FluxReduxSchnellPredictor",
                "redux": "tiny-flux-redux",
            },
        ),
        _flux(
            "tiny-flux-redux-dev",
            weights="tiny-flux-dev",
            description="Random tiny FLUX dev and Redux encoder, flux-redux-dev's inputs.",
            **{
                **_DEV,
                **_REDUX,
                **_TINY,
                "predictor": "FluxReduxDevPredictor",
                "redux": "tiny-flux-redux",
            },
        ),
        _flux(
            "tiny-flux-fill-dev",
            weights="tiny-flux-fill-dev",
            description="Random tiny FLUX Fill with flux-fill-dev's inputs, for offline tests.",
            **{**_FILL, **_TINY},
        ),
        _flux(
            "tiny-flux-kontext-dev",
            weights="tiny-flux-kontext-dev",
            description="Random tiny FLUX Kontext with flux-kontext-dev's inputs, for tests.",
            **{**_KONTEXT, **_TINY},
        ),
        _flux(
            "tiny-flux-schnell",
            weights="tiny-flux-schnell",
            description="Random tiny FLUX with schnell's inputs, for offline tests and demos.",
            **{**_SCHNELL, **_TINY},
        ),
        _flux(
            "tiny-flux-dev",
            weights="tiny-flux-dev",
            description="Random tiny FLUX with dev's inputs, for offline tests and demos.",
            **{**_DEV, **_TINY},
        ),
        _flux(
            "mid-flux-schnell",
            weights="mid-flux-schnell",
            description="Random FLUX with real layer widths (3072) but 2 blocks, for benchmarks.",
            **{**_SCHNELL, "safety": _TINY_SAFETY, "captioner": "tiny-captioner"},
        ),
        _flux(
            "mini-flux-schnell",
            weights="mini-flux-schnell",
            description=(
                'Mini FLUX trained on flat shapes ("a red circle on a blue background"): '
                "real drawings offline on a CPU."
            ),
            **{**_SCHNELL, **_MINI, "max_sequence_length": 32},
        ),
        _flux(
            "mini-flux-kontext",
            weights="mini-flux-kontext",
            description=(
                'Mini FLUX Kontext fine-tuned on edits of flat shapes ("make the shape red", '
                '"move the shape to the left"): real edits offline on a CPU.'
            ),
            **{**_KONTEXT, **_MINI, "max_sequence_length": 32},
        ),
        _sdxl(
            "sdxl",
            weights="sdxl",
            refiner="sdxl-refiner",
            description="SDXL 1.0 with its refiner: text-to-image, img2img, inpainting.",
        ),
        _sdxl(
            "tiny-sdxl",
            weights="tiny-sdxl",
            refiner="tiny-sdxl-refiner",
            **_TINY,
            description="Random tiny SDXL and refiner with SDXL's inputs, for offline tests.",
        ),
        _sdxl(
            "mini-sdxl",
            weights="mini-sdxl",
            description=(
                'Mini SDXL (no refiner) trained on flat shapes ("a red circle on a blue '
                'background"): real drawings offline on a CPU.'
            ),
            **_MINI,
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        known = ", ".join(sorted(SPECS))
        raise ValueError(f"Unknown model {name!r}. Choose one of: {known}.") from None

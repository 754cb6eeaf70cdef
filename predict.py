"""Cog adapter: thin predictor classes that turn Cog inputs into plain calls.

All model logic lives in models/ (no cog import there). Input definitions stay
literal (no computed choices) because `cog build` reads this file statically;
tests/test_predict.py checks they agree with models/. Every predictor is in this one
file, over the 400 lines our other modules keep to: cog's static parser (`cog run`,
`cog serve`) reads shared Input() definitions only from the predictor's own file.
"""

import typing
from typing import Optional

from cog import BaseRunner, CancelationException, Input, Path, Secret

import cog_fixes  # noqa: F401  (applied on import)
from models.flux.control import ControlInputs
from models.flux.fill import FillInputs
from models.flux.kontext import KontextInputs
from models.flux.plan import FluxInputs
from models.flux.redux import ReduxInputs
from models.log import to_stdout
from models.sdxl.plan import SDXLInputs
from models.serving import shutdown
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec


class Inputs:
    prompt = Input(description="Text describing the image you want, e.g. 'a cat in a hat'.")
    image = Input(
        description=(
            "Optional input image for image-to-image, or for inpainting together with `mask`. "
            "PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 megapixels. It is rotated by its EXIF "
            "tag, transparent areas become white, and it is scaled down to fit 1440x1440 and "
            "rounded to a multiple of 16; the output has that size unless megapixels asks for "
            "1 or 0.25. aspect_ratio is ignored."
        ),
        default=None,
    )
    image_sdxl = Input(
        description=(
            "Optional input image for image-to-image, or for inpainting together with `mask`. "
            "PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 megapixels. It is rotated by its EXIF "
            "tag, transparent areas become white, and it is scaled down to fit 2048x2048 and "
            "rounded to a multiple of 8; the output has that size, and width and height are "
            "ignored."
        ),
        default=None,
    )
    mask = Input(
        description=(
            "Optional black-and-white mask for inpainting, used with `image`: white areas are "
            "repainted, black areas are kept. Resized to the image (nearest neighbour)."
        ),
        default=None,
    )
    prompt_strength = Input(
        description=(
            "With an image: how much to change it, 0-1. 1.0 ignores the image entirely; 0.6-0.9 "
            "is typical. The image is reworked for about prompt_strength x num_inference_steps "
            "steps, and at least one must remain."
        ),
        ge=0.0,
        le=1.0,
        default=0.8,
    )
    aspect_ratio = Input(
        description=(
            "Shape of the image: 1:1 is 1024x1024, 16:9 is 1344x768, 9:16 is 768x1344 ... "
            "(at 1 megapixel). Ignored when an input image is given."
        ),
        choices=["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"],
        default="1:1",
    )
    megapixels = Input(
        description=(
            "Approximate size of the output: 1 (e.g. 1024x1024) or 0.25 (e.g. 512x512, 4x "
            "faster). match_input, the default: the input image's own size (at most "
            "1440x1440), or 1 megapixel when there is no input image. With an image, 1 or 0.25 "
            "keep its shape at that size."
        ),
        choices=["1", "0.25", "match_input"],
        default="match_input",
    )
    num_outputs = Input(description="Number of images to generate, 1-4.", ge=1, le=4, default=1)
    seed = Input(
        description=(
            "Random seed, 0 to 4294967295. The same inputs and seed give the same images on "
            "the same machine. Leave empty for a random seed (logged as 'Using seed: N')."
        ),
        ge=0,
        le=4294967295,
        default=None,
    )
    output_format = Input(
        description="File format of the images: webp (small), jpg, or png (lossless).",
        choices=["webp", "jpg", "png"],
        default="webp",
    )
    output_quality = Input(
        description="Compression quality for webp and jpg, 0-100 (100 is best). Ignored for png.",
        ge=0,
        le=100,
        default=80,
    )
    disable_safety_checker = Input(
        description=(
            "Skip the NSFW safety check. By default every image is checked and unsafe ones are "
            "removed from the output; if all are unsafe the prediction fails."
        ),
        default=False,
    )
    go_fast = Input(
        description=(
            "Faster on a GPU: a compiled copy of the model, with fp8 weights and activations "
            "where the GPU multiplies fp8 (H100, L40S, RTX 40xx), LoRAs swapped into it without "
            "recompiling. Its images are close to, not bit-identical with, go_fast=false, which "
            "runs the model at full precision and repeats the same image for the same seed. "
            "On a CPU both run the same full-precision model."
        ),
        default=True,
    )
    step_cache = Input(
        description=(
            "Skip steps: the transformer computes the first two steps, then one in three and "
            "the last (11 of 28), and the steps between are extrapolated from the last ones "
            "computed (diffusers' TaylorSeer cache). Faster (about 2x at 28 steps); the image is "
            "close to, not the same as, one without. Works with go_fast and LoRAs."
        ),
        default=False,
    )
    step_cache_kontext = Input(
        description=(
            "Skip steps, as go_fast does on this model (Replicate's Kontext go_fast includes "
            "it): the transformer computes the first two steps, then one in three and the "
            "last, and the steps between are extrapolated (diffusers' TaylorSeer cache). true "
            "turns it on with go_fast=false too."
        ),
        default=False,
    )
    go_fast_sdxl = Input(
        description=(
            "A compiled copy of the UNet, with fp8 where the GPU multiplies fp8 (H100, L40S, "
            "RTX 40xx). Off by default for SDXL until benchmarks on a GPU show its gain; images "
            "are close to, not bit-identical with, go_fast=false. No effect on a CPU."
        ),
        default=False,
    )
    lora_weights = Input(
        description=(
            "A LoRA to apply. Accepted: a Replicate model 'owner/model' or "
            "'owner/model/version' (its trained weights); 'huggingface.co/owner/repo' or a file "
            "in it, 'huggingface.co/owner/repo/resolve/main/style.safetensors'; a CivitAI page "
            "'civitai.com/models/12345?modelVersionId=67890' or download link "
            "'civitai.com/api/download/models/67890'; an https URL of a .safetensors file or of "
            "a .tar/.zip holding one (signed URLs with a query string too); a data: URI; a local "
            "path. Layouts: diffusers/PEFT, kohya/sd-scripts, XLabs, ComfyUI. When a repo or "
            "archive holds several .safetensors, lora.safetensors or "
            "pytorch_lora_weights.safetensors is used, else the shallowest, shortest name; the "
            "choice is logged. Fetched LoRAs are cached on disk and stay loaded between requests."
        ),
        default=None,
    )
    lora_scale = Input(
        description=(
            "Strength of lora_weights, -1 to 3: 1 applies it as trained, 0 gives the same image "
            "as no LoRA, negative values push away from what it learnt."
        ),
        ge=-1,
        le=3,
        default=1,
    )
    extra_lora = Input(
        description=(
            "A second LoRA applied together with lora_weights, from the same kinds of sources "
            "(e.g. 'huggingface.co/owner/style-lora'). Each keeps its own scale."
        ),
        default=None,
    )
    extra_lora_scale = Input(
        description="Strength of extra_lora, -1 to 3 (as lora_scale).",
        ge=-1,
        le=3,
        default=1,
    )
    hf_api_token = Input(
        description="Hugging Face token for LoRAs in private or gated repos. Never logged.",
        default=None,
    )
    civitai_api_token = Input(
        description="CivitAI API token for LoRAs that need a login to download. Never logged.",
        default=None,
    )
    control_preprocess = Input(
        description=(
            "Turn control_image into the map the model follows (Canny: white edges on black, "
            "by kornia's Canny; Depth: a depth map, near bright, by Depth Anything). false: "
            "control_image is such a map already (made by you), used as sent."
        ),
        default=True,
    )
    return_control_image = Input(
        description=(
            "Also return the control map the model followed, after the images (one more "
            "file). It is made from your own picture, so the safety check skips it."
        ),
        default=False,
    )
    megapixels_control = Input(
        description=(
            "Size of the output. match_input, the default: the control image's own size, at "
            "most 1440x1440. 1 or 0.25: scaled to about that many megapixels, keeping its "
            "shape. Sides are rounded to multiples of 16."
        ),
        choices=["1", "0.25", "match_input"],
        default="match_input",
    )
    redux_image = Input(
        description=(
            "The picture to make variations of. PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 "
            "megapixels, rotated by its EXIF tag; Redux's image encoder sees it at 384x384."
        )
    )
    redux_prompt = Input(
        description=(
            "Optional words that steer the variation, e.g. 'in winter, at night'. Empty: "
            "variations of the picture alone."
        ),
        default="",
    )
    redux_strength = Input(
        description=(
            "How much the picture counts, 0-1: 1 (the default) is a plain Redux variation; "
            "lower lets the prompt count more; 0 draws from the prompt alone."
        ),
        ge=0.0,
        le=1.0,
        default=1.0,
    )
    aspect_ratio_redux = Input(
        description=(
            "Shape of the output: 1:1 is 1024x1024, 16:9 is 1344x768, 9:16 is 768x1344 ... "
            "(at 1 megapixel); the picture's shape does not carry over."
        ),
        choices=["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"],
        default="1:1",
    )
    megapixels_redux = Input(
        description="Approximate size of the output: 1 (e.g. 1024x1024) or 0.25 (512x512).",
        choices=["1", "0.25"],
        default="1",
    )


def _load(predictor: BaseRunner, default_model: str):
    """Set up the variant MODEL_NAME names (default_model if unset) for this predictor."""
    to_stdout()
    # A prediction cancelled at shutdown ends as "canceled", as by POST .../cancel.
    shutdown.use_cancel_error(CancelationException)
    settings = load_settings()
    spec = get_spec(settings.model or default_model)
    name = type(predictor).__name__
    if spec.predictor != name:
        raise ValueError(
            f"MODEL_NAME={spec.name} is served by {spec.predictor}, not {name}. "
            f"Run `script/select {spec.name}` to point cog.yaml at the right class."
        )
    return DiffusionModel(spec, settings)


def _integer_fields(inputs_cls) -> set[str]:
    """The inputs typed int (or int | None) in the plain inputs dataclass."""
    hints = typing.get_type_hints(inputs_cls)
    return {name for name, hint in hints.items() if int in (hint, *typing.get_args(hint))}


def _inputs(inputs_cls, arguments: dict):
    """run()'s arguments (from locals()) as plain values of inputs_cls."""
    values = {k: v for k, v in arguments.items() if k != "self"}
    for name, value in values.items():
        if isinstance(value, Secret):
            values[name] = value.get_secret_value() or None
    # JSON Schema counts 4.0 as an integer, and coglet passes it on unconverted.
    for name in _integer_fields(inputs_cls):
        if values.get(name) is not None:
            values[name] = int(values[name])
    return inputs_cls(**values)


class FluxSchnellPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-schnell")

    def run(
        self,
        prompt: str = Inputs.prompt,
        image: Optional[Path] = Inputs.image,
        mask: Optional[Path] = Inputs.mask,
        prompt_strength: float = Inputs.prompt_strength,
        aspect_ratio: str = Inputs.aspect_ratio,
        megapixels: str = Inputs.megapixels,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-4. schnell is distilled for 4; fewer is faster.",
            ge=1,
            le=4,
            default=4,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(FluxInputs, locals()))


class FluxDevPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-dev")

    def run(
        self,
        prompt: str = Inputs.prompt,
        image: Optional[Path] = Inputs.image,
        mask: Optional[Path] = Inputs.mask,
        prompt_strength: float = Inputs.prompt_strength,
        aspect_ratio: str = Inputs.aspect_ratio,
        megapixels: str = Inputs.megapixels,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-50. 28 is the default; 20-50 is the useful range.",
            ge=1,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How closely to follow the prompt, 0-10. 2-3.5 looks most natural; higher values "
                "follow the prompt more literally with more contrast."
            ),
            ge=0,
            le=10,
            default=3,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(FluxInputs, locals()))


class SDXLPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "sdxl")

    def run(
        self,
        prompt: str = Inputs.prompt,
        negative_prompt: str = Input(
            description=(
                "What the image should not show, e.g. 'blurry, text, extra fingers'. Leave empty "
                "for none. Has no effect when guidance_scale is 1 or less."
            ),
            default="",
        ),
        image: Optional[Path] = Inputs.image_sdxl,
        mask: Optional[Path] = Inputs.mask,
        width: int = Input(
            description=(
                "Width of the output in pixels, 256-2048, rounded to a multiple of 8. SDXL works "
                "best near 1024x1024 in total pixels. Ignored when an input image is given."
            ),
            ge=256,
            le=2048,
            default=1024,
        ),
        height: int = Input(
            description=(
                "Height of the output in pixels, 256-2048, rounded to a multiple of 8. Ignored "
                "when an input image is given."
            ),
            ge=256,
            le=2048,
            default=1024,
        ),
        num_outputs: int = Inputs.num_outputs,
        scheduler: str = Input(
            description=(
                "The sampler that turns noise into an image. K_EULER is a good default; "
                "DPMSolverMultistep and KarrasDPM give good results in fewer steps (20-25); "
                "K_EULER_ANCESTRAL adds variety; HeunDiscrete is slower (2 model calls a step)."
            ),
            choices=[
                "DDIM",
                "DPMSolverMultistep",
                "HeunDiscrete",
                "KarrasDPM",
                "K_EULER_ANCESTRAL",
                "K_EULER",
                "PNDM",
            ],
            default="K_EULER",
        ),
        num_inference_steps: int = Input(
            description="Denoising steps, 1-100. 30 is the default; 20-50 is the useful range.",
            ge=1,
            le=100,
            default=30,
        ),
        guidance_scale: float = Input(
            description=(
                "How closely to follow the prompt, 0-20. 5-9 is typical; higher values follow it "
                "more literally with harsher colours. 1 or less turns guidance off (faster)."
            ),
            ge=0,
            le=20,
            default=7.5,
        ),
        prompt_strength: float = Inputs.prompt_strength,
        seed: Optional[int] = Inputs.seed,
        refine: str = Input(
            description=(
                "Second pass with the SDXL refiner model for finer detail. "
                "expert_ensemble_refiner: the base model runs the first high_noise_frac of the "
                "steps and the refiner finishes them (about as fast as no refiner). "
                "base_image_refiner: the refiner reworks the finished image lightly "
                "(see refine_steps)."
            ),
            choices=["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
            default="no_refiner",
        ),
        high_noise_frac: float = Input(
            description=(
                "For expert_ensemble_refiner: the share of the denoising the base model does "
                "before the refiner takes over, 0.01-0.99 (0.8: base 80%, refiner 20%); each "
                "model needs at least one step. Ignored (and logged) with the other options."
            ),
            ge=0.01,
            le=0.99,
            default=0.8,
        ),
        refine_steps: Optional[int] = Input(
            description=(
                "For base_image_refiner: the refiner's num_inference_steps, 1-100. It runs 30% of "
                "them, rounded down, so use 4 or more. Empty uses num_inference_steps. Ignored by "
                "the other refine options: expert_ensemble_refiner splits num_inference_steps at "
                "high_noise_frac."
            ),
            ge=1,
            le=100,
            default=None,
        ),
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast_sdxl,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(SDXLInputs, locals()))


class FluxFillPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-fill-dev")

    def run(
        self,
        prompt: str = Input(description="What to paint in the masked area, e.g. 'a red door'."),
        image: Path = Input(
            description=(
                "The picture to fill in. Without `mask`, its transparent pixels are what is "
                "repainted. PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 megapixels, rotated "
                "by its EXIF tag; scaled down to fit 1440x1440 and to sides in multiples of "
                "32 (see megapixels)."
            )
        ),
        mask: Optional[Path] = Input(
            description=(
                "Optional black-and-white mask: white areas are repainted, black areas are "
                "kept (a grey pixel counts as white from half brightness). Resized to the "
                "image (nearest neighbour, logged). With a mask, the image's transparency "
                "is not used. A mask with nothing, or everything, to repaint is refused."
            ),
            default=None,
        ),
        outpaint: str = Input(
            description=(
                "Grow the canvas around the picture and paint the new area: zoom out 1.5x "
                "or 2x (the picture in the middle), or extend one side by half the "
                "picture's width or height. Adds to what the mask or transparency repaints."
            ),
            choices=[
                "none",
                "zoom out 1.5x",
                "zoom out 2x",
                "extend left",
                "extend right",
                "extend top",
                "extend bottom",
            ],
            default="none",
        ),
        megapixels: str = Input(
            description=(
                "Size of the output. match_input, the default: the picture's own size (after "
                "outpaint), at most 1440x1440. 1 or 0.25: scaled to about that many "
                "megapixels, keeping its shape. Sides are rounded to multiples of 32."
            ),
            choices=["1", "0.25", "match_input"],
            default="match_input",
        ),
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-50. 28 is the default; 28-50 is the useful range.",
            ge=1,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How closely to follow the prompt, 0-100. Fill is distilled for high "
                "guidance: 30 is the default, 20-50 the useful range."
            ),
            ge=0,
            le=100,
            default=30,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(FillInputs, locals()))


class FluxKontextPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-kontext-dev")

    def run(
        self,
        prompt: str = Input(
            description=(
                "The edit, as an instruction: 'make the car red', 'put a hat on the cat', "
                "'change the text to OPEN'. Say what should stay too ('keep the face')."
            )
        ),
        input_image: Path = Input(
            description=(
                "The picture to edit. PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 "
                "megapixels, rotated by its EXIF tag. It is resized to the resolution "
                "Kontext was trained at nearest its shape (about 1 megapixel), logged."
            )
        ),
        mask: Optional[Path] = Input(
            description=(
                "Optional black-and-white mask: the edit stays within its white areas, black "
                "areas are kept. Resized to the picture (nearest neighbour). With a mask the "
                "output keeps the picture's shape, and aspect_ratio is ignored (logged)."
            ),
            default=None,
        ),
        aspect_ratio: str = Input(
            description=(
                "Shape of the output. match_input_image, the default: the picture's shape, "
                "at Kontext's nearest trained resolution. The others are the usual sizes at "
                "1 megapixel: 1:1 is 1024x1024, 16:9 is 1344x768, 9:16 is 768x1344 ..."
            ),
            choices=[
                "match_input_image",
                "1:1",
                "16:9",
                "21:9",
                "3:2",
                "2:3",
                "4:5",
                "5:4",
                "3:4",
                "4:3",
                "9:16",
                "9:21",
            ],
            default="match_input_image",
        ),
        num_inference_steps: int = Input(
            description="Denoising steps, 4-50. 28 is the default; fewer is faster and rougher.",
            ge=4,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How strongly to follow the instruction, 0-10. 2.5 is the default; raise it "
                "when an edit comes out too weak."
            ),
            ge=0,
            le=10,
            default=2.5,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache_kontext,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> Path:
        # One picture, as Replicate's FLUX Kontext models answer.
        return self.model.predict(_inputs(KontextInputs, locals()))[0]


class FluxCannyPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-canny-dev")

    def run(
        self,
        prompt: str = Inputs.prompt,
        control_image: Path = Input(
            description=(
                "The picture whose edges the new one follows (or an edge map, with "
                "control_preprocess=false). PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 "
                "megapixels, rotated by its EXIF tag; scaled down to fit 1440x1440 and to "
                "sides in multiples of 16 (see megapixels)."
            )
        ),
        control_preprocess: bool = Inputs.control_preprocess,
        return_control_image: bool = Inputs.return_control_image,
        megapixels: str = Inputs.megapixels_control,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-50. 28 is the default; 28-50 is the useful range.",
            ge=1,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How closely to follow the prompt, 0-100. Canny is distilled for high "
                "guidance: 30 is the default."
            ),
            ge=0,
            le=100,
            default=30,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(ControlInputs, locals()))


class FluxDepthPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-depth-dev")

    def run(
        self,
        prompt: str = Inputs.prompt,
        control_image: Path = Input(
            description=(
                "The picture whose depth the new one follows (or a depth map, near bright, "
                "with control_preprocess=false). PNG, JPEG, WebP, GIF, BMP or TIFF, up to 64 "
                "megapixels, rotated by its EXIF tag; scaled down to fit 1440x1440 and to "
                "sides in multiples of 16 (see megapixels)."
            )
        ),
        control_preprocess: bool = Inputs.control_preprocess,
        return_control_image: bool = Inputs.return_control_image,
        megapixels: str = Inputs.megapixels_control,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-50. 28 is the default; 28-50 is the useful range.",
            ge=1,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How closely to follow the prompt, 0-100. Depth is distilled for high "
                "guidance: 10 is the default."
            ),
            ge=0,
            le=100,
            default=10,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(ControlInputs, locals()))


class FluxReduxSchnellPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-redux-schnell")

    def run(
        self,
        redux_image: Path = Inputs.redux_image,
        prompt: str = Inputs.redux_prompt,
        redux_strength: float = Inputs.redux_strength,
        aspect_ratio: str = Inputs.aspect_ratio_redux,
        megapixels: str = Inputs.megapixels_redux,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-4. schnell is distilled for 4; fewer is faster.",
            ge=1,
            le=4,
            default=4,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(ReduxInputs, locals()))


class FluxReduxDevPredictor(BaseRunner):
    def setup(self) -> None:
        self.model = _load(self, "flux-redux-dev")

    def run(
        self,
        redux_image: Path = Inputs.redux_image,
        prompt: str = Inputs.redux_prompt,
        redux_strength: float = Inputs.redux_strength,
        aspect_ratio: str = Inputs.aspect_ratio_redux,
        megapixels: str = Inputs.megapixels_redux,
        num_outputs: int = Inputs.num_outputs,
        num_inference_steps: int = Input(
            description="Denoising steps, 1-50. 28 is the default; 20-50 is the useful range.",
            ge=1,
            le=50,
            default=28,
        ),
        guidance: float = Input(
            description=(
                "How closely to follow the picture (and prompt), 0-10. 3 is the default; "
                "2-3.5 looks most natural."
            ),
            ge=0,
            le=10,
            default=3,
        ),
        seed: Optional[int] = Inputs.seed,
        output_format: str = Inputs.output_format,
        output_quality: int = Inputs.output_quality,
        disable_safety_checker: bool = Inputs.disable_safety_checker,
        go_fast: bool = Inputs.go_fast,
        step_cache: bool = Inputs.step_cache,
        lora_weights: Optional[str] = Inputs.lora_weights,
        lora_scale: float = Inputs.lora_scale,
        extra_lora: Optional[str] = Inputs.extra_lora,
        extra_lora_scale: float = Inputs.extra_lora_scale,
        hf_api_token: Optional[Secret] = Inputs.hf_api_token,
        civitai_api_token: Optional[Secret] = Inputs.civitai_api_token,
    ) -> list[Path]:
        return self.model.predict(_inputs(ReduxInputs, locals()))

"""FLUX.1 Fill requests: the picture and what of it to repaint, from its transparent
pixels, a mask, or a canvas grown around it (outpaint), decided into a job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from models.errors import InputError, check_choice
from models.flux.plan import FluxRequestInputs
from models.log import log
from models.request import checks
from models.request.imaging import load_image_and_alpha, load_mask, resize_image
from models.request.job import Job
from models.request.sizes import MATCH_INPUT, size_for_image
from models.specs import ModelSpec

# How `outpaint` grows the canvas: the share of the picture's width added on the left
# and right, and of its height on the top and bottom. The new area is repainted.
OUTPAINT: dict[str, tuple[float, float, float, float]] = {
    "none": (0, 0, 0, 0),
    "zoom out 1.5x": (0.25, 0.25, 0.25, 0.25),
    "zoom out 2x": (0.5, 0.5, 0.5, 0.5),
    "extend left": (0.5, 0, 0, 0),
    "extend right": (0, 0, 0.5, 0),
    "extend top": (0, 0.5, 0, 0),
    "extend bottom": (0, 0, 0, 0.5),
}
# What the new canvas shows under the mask: nothing of it survives, a neutral grey
# biases nothing either.
_CANVAS = (127, 127, 127)


@dataclass(frozen=True)
class FillInputs(FluxRequestInputs):
    """What a user sent, as plain values (the Cog adapter fills this in)."""

    prompt: str
    image: Path | None = None
    mask: Path | None = None
    outpaint: str = "none"
    megapixels: str = MATCH_INPUT
    num_outputs: int = 1


def plan(spec: ModelSpec, inputs: FillInputs) -> Job:
    """Validate inputs and decide everything the pipeline needs."""
    checks.output_files(inputs.output_format, inputs.output_quality)
    num_outputs = checks.num_outputs(inputs.num_outputs)
    steps = checks.steps(spec, inputs.num_inference_steps)
    guidance = checks.guidance(spec, inputs.guidance)
    check_choice("outpaint", inputs.outpaint, OUTPAINT)
    loras = inputs.lora_requests()
    if inputs.image is None:
        raise InputError("image is required: send the picture to fill in (and a mask).")
    picture, repaint = _picture_and_mask(inputs)
    picture, repaint = _outpaint(picture, repaint, inputs.outpaint)
    size = size_for_image(*picture.size, multiple=spec.size_multiple, megapixels=inputs.megapixels)
    picture = resize_image(picture, size)
    repaint = repaint.resize(size, Image.Resampling.NEAREST)
    _check_coverage(repaint)
    return Job(
        mode=checks.mode(spec, "fill"),
        prompt=inputs.prompt,
        width=size[0],
        height=size[1],
        num_outputs=num_outputs,
        steps=steps,
        guidance=guidance,
        seed=checks.seed(inputs.seed),
        image=picture,
        mask=repaint,
        loras=loras,
        go_fast=inputs.go_fast,
        step_cache=checks.step_cache(spec, inputs.step_cache, inputs.go_fast),
    )


def _picture_and_mask(inputs: FillInputs) -> tuple[Image.Image, Image.Image]:
    """The picture, and what to repaint (white) at its size: the mask when given, else
    the picture's transparent pixels, else nothing yet (outpaint may add some)."""
    picture, alpha = load_image_and_alpha(inputs.image, input_name="image", background=_CANVAS)
    if inputs.mask is not None:
        if alpha is not None:
            log.info("mask decides what to repaint: the image's transparent pixels are kept")
        return picture, _binary(load_mask(inputs.mask, picture.size, input_name="mask"))
    if alpha is None:
        return picture, Image.new("L", picture.size, 0)
    repaint = _binary(alpha.point(lambda a: 255 - a))
    share = _share(repaint)
    log.info(f"Repainting the image's transparent pixels ({share:.0%} of it)")
    return picture, repaint


def _outpaint(picture: Image.Image, repaint: Image.Image, choice: str):
    """The picture on a larger canvas, the new area marked for repainting."""
    left, top, right, bottom = OUTPAINT[choice]
    if choice == "none":
        return picture, repaint
    width, height = picture.size
    at = (round(left * width), round(top * height))
    size = (at[0] + width + round(right * width), at[1] + height + round(bottom * height))
    canvas, grown = Image.new("RGB", size, _CANVAS), Image.new("L", size, 255)
    canvas.paste(picture, at)
    grown.paste(repaint, at)
    log.info(
        f"outpaint={choice}: the {width}x{height} picture on a {size[0]}x{size[1]} canvas "
        f"at {at[0]},{at[1]}; the new area is painted"
    )
    return canvas, grown


def _binary(mask: Image.Image) -> Image.Image:
    # As the pipeline reads a mask: a pixel at half or more is repainted.
    return mask.point(lambda v: 255 if v >= 128 else 0)


def _share(mask: Image.Image) -> float:
    histogram = mask.histogram()
    return histogram[255] / max(1, sum(histogram))


def _check_coverage(repaint: Image.Image) -> None:
    share = _share(repaint)
    if share == 0:
        raise InputError(
            "Nothing to repaint: the mask is all black (or the image has no transparent "
            "pixels and no mask was given) and outpaint is none. Send a mask whose white "
            "areas are repainted, an image with transparent areas, or choose an outpaint."
        )
    if share == 1:
        raise InputError(
            "The mask covers the whole image, so nothing of it would be kept: send a mask "
            "whose black areas keep part of the image, or use flux-dev for a new picture."
        )

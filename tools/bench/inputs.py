"""The requests benchmarks send, in each interface's own inputs: one place that knows FLUX
takes aspect_ratio and megapixels where SDXL takes width and height, Fill a picture and
a mask, Kontext a picture to edit, Canny and Depth a control image, Redux a picture."""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from models.request.sizes import size_for_aspect_ratio
from models.specs import get_spec


def size_inputs(interface: str, aspect_ratio: str = "1:1", megapixels: str = "1") -> dict:
    """A size of the aspect-ratio table (models/request/sizes.py) as `interface`'s inputs
    (ModelSpec.interface): SDXL gets the width and height FLUX draws for them. Fill's
    size follows its picture (picture_inputs), Kontext draws at about 1 megapixel."""
    if interface == "sdxl":
        width, height = size_for_aspect_ratio(aspect_ratio, megapixels)
        return {"width": width, "height": height}
    if interface in ("flux-fill", "flux-control"):
        return {"megapixels": megapixels}
    if interface == "flux-kontext":
        return {"aspect_ratio": aspect_ratio}
    return {"aspect_ratio": aspect_ratio, "megapixels": megapixels}


def picture_inputs(interface: str, aspect_ratio: str = "1:1", megapixels: str = "1") -> dict:
    """The pictures an editing interface needs, at the table's size: Fill's picture and a
    mask of its right half, Kontext's picture to edit, Canny's and Depth's control image
    (preprocessed, as by default), Redux's picture. {} for the others."""
    names = {"flux-kontext": "input_image", "flux-control": "control_image",
             "flux-redux": "redux_image"}  # fmt: skip
    if interface not in ("flux-fill", *names):
        return {}
    folder = Path(tempfile.mkdtemp(prefix="bench-pictures-"))
    size = size_for_aspect_ratio(aspect_ratio, megapixels)
    picture = folder / "picture.png"
    Image.linear_gradient("L").resize(size).convert("RGB").save(picture)
    if interface in names:
        return {names[interface]: picture}
    mask = Image.new("L", size, 0)
    mask.paste(255, (size[0] // 2, 0, size[0], size[1]))
    mask.save(folder / "mask.png")
    return {"image": picture, "mask": folder / "mask.png"}


def request_inputs(model: str, *, megapixels: str, steps: int | None) -> dict:
    """The plain request most benchmarks time: a square picture of a cat (for the editing
    models, a square picture to edit or fill)."""
    spec = get_spec(model)
    inputs = {"prompt": "a cat in a hat", "seed": 1}
    inputs |= size_inputs(spec.interface, "1:1", megapixels)
    inputs |= picture_inputs(spec.interface, "1:1", megapixels)
    inputs["num_inference_steps"] = steps or spec.default_steps
    return inputs

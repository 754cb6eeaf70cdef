"""FLUX.1 as the serving model sees it (models/engine/family.py): text to image (with
image-to-image and inpainting), Fill, Kontext, Canny and Depth, and Redux, on one engine."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from PIL import Image

from models.engine import loading
from models.engine.family import Family
from models.flux import control, fill, kontext, redux
from models.flux.engine import FluxEngine, load_components
from models.flux.plan import FluxInputs, plan
from models.settings import Settings
from models.specs import ModelSpec


def _load(spec: ModelSpec, settings: Settings, device: str, *, training: bool = False):
    weights, config = loading.main_weights(spec, settings)
    return load_components(spec, weights, device, config=config)


def _warm_up_inputs() -> list[FluxInputs]:
    """One batch of 1 and one of 2 (a batch of 1 is compiled as its own case); other
    sizes, modes and batches reuse these graphs (dynamic shapes)."""
    return [
        FluxInputs(
            prompt="warm-up",
            megapixels="0.25",
            num_outputs=n,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n in (1, 2)
    ]


@functools.cache
def _warm_up_pictures() -> tuple[Path, Path]:
    """A picture and a mask of its right half, for the warm-up of the editing models."""
    folder = Path(tempfile.mkdtemp(prefix="warm-up-"))
    picture, mask = folder / "picture.png", folder / "mask.png"
    Image.linear_gradient("L").resize((512, 512)).convert("RGB").save(picture)
    half = Image.new("L", (512, 512), 0)
    half.paste(255, (256, 0, 512, 512))
    half.save(mask)
    return picture, mask


def _fill_warm_up_inputs() -> list[fill.FillInputs]:
    picture, mask = _warm_up_pictures()
    return [
        fill.FillInputs(
            prompt="warm-up",
            image=picture,
            mask=mask,
            megapixels="0.25",
            num_outputs=n,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n in (1, 2)
    ]


def _kontext_warm_up_inputs() -> list[kontext.KontextInputs]:
    """Kontext draws one image a request, at the sizes it was trained at."""
    picture, _ = _warm_up_pictures()
    return [
        kontext.KontextInputs(
            prompt="warm-up", input_image=picture, num_inference_steps=4, seed=0, go_fast=True
        )
    ]


def _control_warm_up_inputs() -> list[control.ControlInputs]:
    """The control image as sent (its preprocessing is not compiled)."""
    picture, _ = _warm_up_pictures()
    return [
        control.ControlInputs(
            prompt="warm-up",
            control_image=picture,
            control_preprocess=False,
            megapixels="0.25",
            num_outputs=n,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n in (1, 2)
    ]


def _redux_warm_up_inputs() -> list[redux.ReduxInputs]:
    picture, _ = _warm_up_pictures()
    return [
        redux.ReduxInputs(
            redux_image=picture,
            megapixels="0.25",
            num_outputs=n,
            num_inference_steps=1,
            seed=0,
            go_fast=True,
        )
        for n in (1, 2)
    ]


FLUX = Family(
    name="flux",
    inputs=FluxInputs,
    plan=plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_warm_up_inputs,
)
FLUX_FILL = Family(
    name="flux-fill",
    inputs=fill.FillInputs,
    plan=fill.plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_fill_warm_up_inputs,
)
FLUX_KONTEXT = Family(
    name="flux-kontext",
    inputs=kontext.KontextInputs,
    plan=kontext.plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_kontext_warm_up_inputs,
)
FLUX_CONTROL = Family(
    name="flux-control",
    inputs=control.ControlInputs,
    plan=control.plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_control_warm_up_inputs,
)
FLUX_REDUX = Family(
    name="flux-redux",
    inputs=redux.ReduxInputs,
    plan=redux.plan,
    load_components=_load,
    engine=FluxEngine,
    warm_up_inputs=_redux_warm_up_inputs,
)

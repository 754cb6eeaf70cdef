"""Small training datasets and runs shared by the training tests."""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

from PIL import Image, ImageDraw

from models.settings import Settings
from models.specs import get_spec
from models.train.config import TrainInputs, plan
from models.train.loop import train


def png(size=(64, 64), color=(200, 40, 40), mode="RGB", shape=True) -> bytes:
    image = Image.new(mode, size, (240, 240, 240) if mode == "RGB" else (0, 0, 0, 0))
    if shape:
        fill = color if mode == "RGB" else (*color, 255)
        ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=fill)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def archive(path: Path, members: dict[str, bytes]) -> Path:
    """A .zip or .tar (by suffix) holding `members`."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
    else:
        with tarfile.open(path, "w") as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path


def dataset(path: Path) -> Path:
    """Two captioned circles, one without a caption, one transparent, and files to skip."""
    return archive(
        path,
        {
            "red.png": png(color=(220, 30, 30)),
            "red.txt": b"a red circle",
            "blue.png": png(color=(30, 30, 220)),
            "blue.txt": b"ZIKI a blue circle",
            "plain/green.jpg": _jpeg(),
            "cutout.png": png(mode="RGBA", color=(30, 200, 30)),
            "__MACOSX/._red.png": b"\0",
            ".DS_Store": b"\0",
            "notes.pdf": b"%PDF-1.4",
        },
    )


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(png(color=(30, 200, 30)))).save(buf, format="JPEG")
    return buf.getvalue()


# What the tests train: tiny, 64 px, few steps, a learning rate that moves a tiny model.
QUICK = dict(
    trigger_word="ZIKI",
    steps=6,
    learning_rate=1e-2,
    lora_rank=4,
    resolution="64",
    autocaption=False,
    seed=7,
    checkpoint_every=3,
    samples=1,
)


def quick_run(settings: Settings, model: str, data: Path, out: Path, resume=None, **kw):
    spec = get_spec(model)
    config = plan(spec, TrainInputs(input_images=data, **{**QUICK, **kw}))
    tar = out.with_suffix(".tar")
    result = train(spec, replace(settings, safety_checker=False), config, data, out,
                   tar_path=tar, resume=resume)  # fmt: skip
    return result, tar

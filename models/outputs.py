"""Writing generated images to files in the format the user asked for."""

import shutil
import tempfile
from pathlib import Path

from PIL import Image

from models.errors import check_choice, check_range
from models.log import log

OUTPUT_FORMATS = ("webp", "jpg", "png")


def save_images(
    images: list[Image.Image],
    *,
    output_format: str = "webp",
    output_quality: int = 80,
    indices: list[int] | None = None,
    directory: Path | None = None,
) -> list[Path]:
    """Save `images` as out-{i}.{ext} and return their paths in order.

    i is indices[k] when given (so a filtered batch keeps its original numbers), else k.
    Without `directory`, each call writes into its own fresh temporary folder, so the
    outputs of one prediction never overwrite another's. Quality applies to webp and jpg;
    png is lossless and ignores it.
    """
    check_choice("output_format", output_format, OUTPUT_FORMATS)
    check_range("output_quality", output_quality, 0, 100)
    if indices is None:
        indices = list(range(len(images)))
    if len(indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(indices)} indices")

    created = directory is None
    if created:
        directory = Path(tempfile.mkdtemp(prefix="out-"))
    else:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)

    try:
        paths = [
            _save(image, directory / f"out-{index}.{output_format}", output_format, output_quality)
            for index, image in zip(indices, images, strict=True)
        ]
    except BaseException:
        if created:  # nobody will ever see a half-written batch, nor remove it
            shutil.rmtree(directory, ignore_errors=True)
        raise

    quality = "lossless" if output_format == "png" else f"quality {output_quality}"
    log.info(f"Saved {len(paths)} image(s) as {output_format} ({quality}) in {directory}")
    return paths


def _save(image: Image.Image, path: Path, output_format: str, output_quality: int) -> Path:
    if output_format == "jpg":
        # JPEG has no alpha; optimize costs a little time for a smaller file at no loss.
        image.convert("RGB").save(path, "JPEG", quality=output_quality, optimize=True)
    elif output_format == "webp":
        image.save(path, "WEBP", quality=output_quality)
    else:
        image.save(path, "PNG")
    return path

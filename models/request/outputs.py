"""Writing generated images to files in the format the user asked for."""

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from models.log import log

OUTPUT_FORMATS = ("webp", "jpg", "png")
# Encoder effort, chosen by measurement on a 1 MP image (docs/benchmarks.md): WebP
# method 2 takes about a quarter of the time of PIL's default (4) for a file 2% larger;
# PNG at zlib level 1 about a sixth of the default (6) for 16% more bytes, still lossless.
WEBP_METHOD = 2
PNG_COMPRESS_LEVEL = 1


def _save_one(image: Image.Image, path: Path, output_format: str, quality: int) -> Path:
    if output_format == "jpg":
        # JPEG has no alpha; optimize costs a little time for a smaller file at no loss.
        image.convert("RGB").save(path, "JPEG", quality=quality, optimize=True)
    elif output_format == "webp":
        image.save(path, "WEBP", quality=quality, method=WEBP_METHOD)
    else:
        image.save(path, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return path


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
    png is lossless and ignores it. Both were checked by plan() (models/request/checks.py)
    before any image was made.
    """
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

    # PIL's encoders release the GIL: several outputs encode at once.
    targets = [directory / f"out-{index}.{output_format}" for index in indices]
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(images))) as pool:
            jobs = [
                pool.submit(_save_one, image, path, output_format, output_quality)
                for image, path in zip(images, targets, strict=True)
            ]
            paths = [job.result() for job in jobs]
    except BaseException:
        if created:  # nobody will ever see a half-written batch, nor remove it
            shutil.rmtree(directory, ignore_errors=True)
        raise

    quality = "lossless" if output_format == "png" else f"quality {output_quality}"
    log.info(f"Saved {len(paths)} image(s) as {output_format} ({quality}) in {directory}")
    return paths

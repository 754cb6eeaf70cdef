"""Reading user images and masks into clean 8-bit RGB / L images.

Every problem with an uploaded file becomes an InputError naming the input, and every
change made to an image (rotation, colour conversion, resizing) is logged, so a user can
tell why the model saw something other than the file they uploaded.
"""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InputError
from models.log import log

# 64 MP (8192x8192) is far beyond anything we generate (at most 1440x1440), but leaves
# room for full-size camera photos. Checked from the header, before decoding, so a small
# file claiming a huge size cannot exhaust memory.
MAX_INPUT_PIXELS = 64 * 1024 * 1024
# 64 MiB covers a 50 MP camera JPEG or a large screenshot PNG; anything bigger is
# refused before reading it.
MAX_INPUT_BYTES = 64 * 2**20

SUPPORTED_FORMATS = "PNG, JPEG, WebP, GIF, BMP or TIFF"

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ORIENTATION = 0x0112


def load_image(path, *, input_name: str = "image") -> Image.Image:
    """Open an uploaded image as 8-bit RGB, upright per its EXIF orientation.

    Transparent areas are composited on white. Raises InputError naming `input_name`
    when the file is missing, empty, not an image, corrupt, or too large.
    """
    return _load_rgb(path, input_name, background=_WHITE)


def resize_image(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to `size` (width, height) with LANCZOS; the same image when already that size."""
    size = (int(size[0]), int(size[1]))
    if image.size == size:
        return image
    log.info(f"Image resized from {image.width}x{image.height} to {size[0]}x{size[1]}")
    return image.resize(size, Image.Resampling.LANCZOS)


def load_mask(path, size: tuple[int, int], *, input_name: str = "mask") -> Image.Image:
    """Open an inpainting mask as an "L" image of `size`: white = repaint, black = keep.

    Grey values are kept as they are. Transparent areas count as black (keep), because
    masks drawn in editors are usually white strokes on a transparent background.
    Resized with NEAREST so a binary mask stays binary.
    """
    # Greyscale and 1-bit are a mask's own modes: no conversion worth logging.
    mask = _load_rgb(path, input_name, background=_BLACK, native=("L", "1")).convert("L")
    size = (int(size[0]), int(size[1]))
    if mask.size != size:
        log.info(
            f"Input {input_name} resized from {mask.width}x{mask.height} to "
            f"{size[0]}x{size[1]} to match the image"
        )
        mask = mask.resize(size, Image.Resampling.NEAREST)
    if mask.getextrema()[1] == 0:
        log.info(f"Input {input_name} is all black: nothing will be repainted")
    return mask


def load_image_and_alpha(
    path, *, input_name: str, background=(127, 127, 127)
) -> tuple[Image.Image, Image.Image | None]:
    """An image as 8-bit RGB with transparent areas composited on `background`, and its
    alpha channel ("L", 255 = opaque), or None when every pixel is opaque. Same checks
    and logs as load_image."""
    image = _open_upright(path, input_name)
    if not (image.mode in _ALPHA_MODES or "transparency" in image.info):
        return _to_rgb(image, input_name, background, native=()), None
    alpha = image.convert("RGBA").getchannel("A")
    if alpha.getextrema()[0] == 255:
        return image.convert("RGB"), None
    return _to_rgb(image, input_name, background, native=()), alpha


def _load_rgb(path, input_name: str, background, native: tuple[str, ...] = ()) -> Image.Image:
    return _to_rgb(_open_upright(path, input_name), input_name, background, native)


def _open_upright(path, input_name: str) -> Image.Image:
    """The decoded first frame, upright, detached from the file."""
    path = _check_file(path, input_name)
    # PIL only warns between its own limit and twice that; make the warning an error
    # so that no size of header gets past without a decision.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(input_name) from exc
        except UnidentifiedImageError as exc:
            raise _not_an_image(path, input_name) from exc
        except Exception as exc:
            raise _corrupt(input_name, exc) from exc

        with opened:
            width, height = opened.size
            if width * height > MAX_INPUT_PIXELS:
                raise _too_large(input_name, width, height)
            frames = getattr(opened, "n_frames", 1)
            try:
                # Decoding is lazy: force it here so truncation surfaces as an InputError.
                opened.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_large(input_name, width, height) from exc
            except Exception as exc:
                raise _corrupt(input_name, exc) from exc
            if frames > 1:
                log.info(f"Input {input_name} has {frames} frames: using the first")
            image = _upright(opened, input_name)
            # Detach from the file, which the `with` closes.
            return image.copy() if image is opened else image


def _check_file(path, input_name: str) -> Path:
    if path is None or str(path) == "":
        raise InputError(f"{input_name} is missing: no file was given. Upload an image file.")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{input_name} file {path.name!r} was not found. Upload the image again.")
    size = path.stat().st_size
    if size == 0:
        raise InputError(
            f"{input_name} is an empty file (0 bytes). Upload the image again; "
            "the upload may have failed."
        )
    if size > MAX_INPUT_BYTES:
        raise InputError(
            f"{input_name} is {size / 2**20:.0f} MiB, over the limit of "
            f"{MAX_INPUT_BYTES // 2**20} MiB. Downscale it or save it as JPEG or WebP."
        )
    return path


def _upright(image: Image.Image, input_name: str) -> Image.Image:
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:
        # Broken EXIF should not cost the user their image: use it as stored.
        log.info(f"Input {input_name} has unreadable EXIF data ({exc}): orientation not applied")
        return image
    if orientation not in (1, None) and upright is not None:
        log.info(
            f"Input {input_name} turned upright using its EXIF orientation ({orientation}): "
            f"{image.width}x{image.height} -> {upright.width}x{upright.height}"
        )
        return upright
    return image


def _to_rgb(image: Image.Image, input_name: str, background, native) -> Image.Image:
    mode = image.mode
    prefix = f"Input {input_name} mode {mode}"
    if mode == "RGB":
        return image
    if mode in _HIGH_BIT_MODES:
        grey, how = _to_8bit(image)
        log.info(f"{prefix}: {how}")
        return grey.convert("RGB")
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            colour = {_WHITE: "white", _BLACK: "black"}.get(background, f"grey {background}")
            log.info(f"{prefix}: transparent areas composited on {colour}")
            base = Image.new("RGBA", image.size, (*background, 255))
            return Image.alpha_composite(base, image.convert("RGBA")).convert("RGB")
        described = {
            "1": "black-and-white converted to RGB",
            "L": "greyscale converted to RGB",
            "P": "palette colours converted to RGB",
            "CMYK": "CMYK converted to RGB",
        }
        if mode not in native:
            log.info(f"{prefix}: {described.get(mode, 'converted to RGB')}")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InputError(
            f"{input_name} uses colour mode {mode}, which cannot be converted to RGB "
            f"({exc}). Save it as an RGB PNG or JPEG."
        ) from exc


def _to_8bit(image: Image.Image) -> tuple[Image.Image, str]:
    """Scale 16-bit, 32-bit integer or float greyscale into 0-255 instead of clipping.

    "I;16*" is 0-65535 by definition. "I" and "F" carry no range, so it is read from the
    values: 0-1 (float), 0-255, 0-65535, or else the image's own min-max is stretched.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float32))
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    kind = "float" if image.mode == "F" else "16-bit" if image.mode.startswith("I;16") else "32-bit"
    if image.mode.startswith("I;16") or (low >= 0 and 255 < high <= 65535):
        scaled, how = values / 257, "0-65535"
    elif image.mode == "F" and low >= 0 and high <= 1:
        scaled, how = values * 255, "0-1"
    elif low >= 0 and high <= 255:
        scaled, how = values, "0-255"
    else:
        span = high - low or 1.0
        scaled, how = (values - low) * (255 / span), f"{low:g}-{high:g}, stretched"
    pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), f"{kind} greyscale (values {how}) scaled to 8-bit"


def _too_large(input_name: str, width: int | None = None, height: int | None = None):
    limit = f"{MAX_INPUT_PIXELS // 2**20} megapixels ({MAX_INPUT_PIXELS:,} pixels)"
    size = f" ({width}x{height})" if width else ""
    return InputError(
        f"{input_name} is too large{size}: the limit is {limit}. "
        "Downscale it (outputs are at most 1440x1440) and try again."
    )


def _not_an_image(path: Path, input_name: str) -> InputError:
    with path.open("rb") as file:
        head = file.read(16)
    if head[4:8] == b"ftyp":
        return InputError(
            f"{input_name} looks like a HEIC/HEIF/AVIF photo, which is not supported. "
            f"Convert it to JPEG or PNG (supported: {SUPPORTED_FORMATS})."
        )
    return InputError(
        f"{input_name} is not a readable image file. Upload a {SUPPORTED_FORMATS} image."
    )


def _corrupt(input_name: str, exc: Exception) -> InputError:
    return InputError(
        f"{input_name} could not be decoded: the file is truncated or corrupt ({exc}). "
        "Export the image again and re-upload it."
    )

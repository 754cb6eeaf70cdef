"""Output sizes: the aspect-ratio table, and sizes derived from an input image.

Sizes are (width, height) in pixels. Every function logs each change it makes to a
requested or input size, so a user can see why the output is not the size they expected.
"""

import math

from models.errors import check_choice
from models.log import log

# Width x height of about one megapixel, each side a multiple of 64 (the same table
# FLUX and SDXL were trained around). Order is the order users see in the choices.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

MEGAPIXELS = ("1", "0.25")
MATCH_INPUT = "match_input"
MAX_SIDE = 1440

_MEGAPIXEL = 1024 * 1024


def size_for_aspect_ratio(aspect_ratio: str, megapixels: str) -> tuple[int, int]:
    """The table size for `aspect_ratio`; "0.25" megapixels halves each side."""
    check_choice("aspect_ratio", aspect_ratio, ASPECT_RATIOS)
    check_choice("megapixels", megapixels, MEGAPIXELS)
    width, height = ASPECT_RATIOS[aspect_ratio]
    if megapixels == "0.25":
        return width // 2, height // 2
    return width, height


def round_to_multiple(width: int, height: int, multiple: int) -> tuple[int, int]:
    """Round each side to the nearest multiple of `multiple` (halves round up), at least
    `multiple`. The models work on latents, so sides must divide evenly."""
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    rounded = tuple(
        max(multiple, (side + multiple // 2) // multiple * multiple) for side in (width, height)
    )
    if rounded != (width, height):
        log.info(
            f"Size {width}x{height} rounded to {rounded[0]}x{rounded[1]} (multiple of {multiple})"
        )
    return rounded


def size_for_image(
    width: int,
    height: int,
    *,
    multiple: int,
    megapixels: str = MATCH_INPUT,
    max_side: int = MAX_SIDE,
) -> tuple[int, int]:
    """The output size for an input image of `width` x `height`, keeping its aspect ratio.

    megapixels "match_input": the image's own size, scaled down (never up) to fit
    max_side x max_side. "1" / "0.25": scaled up or down to about that many megapixels
    (1 MP = 1024*1024 px), then capped to max_side. The result is rounded to `multiple`.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    check_choice("megapixels", megapixels, (*MEGAPIXELS, MATCH_INPUT))
    # Fit inside the largest multiple not above max_side, so that rounding to the
    # nearest multiple afterwards can never push a side past max_side.
    limit = max(multiple, max_side // multiple * multiple)
    w, h = float(width), float(height)

    if megapixels != MATCH_INPUT:
        scale = math.sqrt(float(megapixels) * _MEGAPIXEL / (w * h))
        w, h = w * scale, h * scale
        if scale != 1:
            direction = "up" if scale > 1 else "down"
            log.info(
                f"Input image {width}x{height} scaled {direction} to "
                f"{round(w)}x{round(h)} (about {megapixels} megapixels)"
            )

    if max(w, h) > limit:
        before = f"{round(w)}x{round(h)}"
        what = "Input image" if megapixels == MATCH_INPUT else "Size"
        scale = limit / max(w, h)
        w, h = w * scale, h * scale
        log.info(f"{what} {before} scaled down to {round(w)}x{round(h)} to fit {limit}x{limit}")

    return round_to_multiple(max(1, round(w)), max(1, round(h)), multiple)


def within_side(width: int, height: int, max_side: int, multiple: int) -> tuple[int, int]:
    """The size of the same aspect ratio whose longer side is `max_side` (each side a
    multiple of `multiple`, never past max_side)."""
    scale = max_side / max(width, height)
    limit = max_side // multiple * multiple
    return tuple(
        min(limit, max(multiple, round(side * scale / multiple) * multiple))
        for side in (width, height)
    )

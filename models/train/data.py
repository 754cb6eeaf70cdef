"""Training images from a zip or tar archive: reading, captions, buckets and batches.

Every image format the predictors read is trained (jpg, png, webp, gif, bmp, tiff);
`name.txt` beside `name.png` is its caption. `__MACOSX/`, dotfiles and other files are
skipped with a log line naming them. Transparent pixels are composited on neutral grey
and kept out of the loss through a mask (see `TrainImage.mask`).

Sizes: each resolution R gives buckets of about R x R pixels in common aspect ratios
(diffusers' `generate_aspect_ratio_buckets`); an image goes to the bucket nearest its
shape at every R whose bucket fits inside it, so images are never upscaled. An image
smaller than every bucket is trained once at its own size, rounded down.

Batches are a pure function of (seed, step): the same global batches, in the same
order, whatever the number of processes and wherever a run resumes.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image

from models.errors import InputError
from models.log import log
from models.request.imaging import MAX_INPUT_BYTES, load_image_and_alpha

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
# Transparent pixels become this grey: it biases no colour, and the mask keeps it out
# of the loss anyway (white or black would be learnt as the subject's background).
NEUTRAL = (127, 127, 127)
# Bucket sides are multiples of this: enough for FLUX (16) and SDXL (8), and few enough
# buckets that small datasets still fill batches.
BUCKET_STEP = 64
MAX_ARCHIVE_MEMBERS = 10_000
INPUT = "input_images"


# A Kontext pair: NAME.png is the picture after the edit, NAME_start.png the one before.
START_SUFFIX = "_start"


@dataclass
class TrainImage:
    name: str  # its path inside the archive
    image: Image.Image  # RGB, transparent areas on NEUTRAL
    mask: Image.Image | None  # "L", 255 where opaque; None when fully opaque
    caption: str | None  # from name.txt; None without one
    start: Image.Image | None = None  # a Kontext pair's picture before the edit (RGB)


def _kind(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        pass
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith((b"Rar!", b"7z\xbc\xaf")):
        return "a RAR or 7z archive"
    return "not an archive"


def _skip_reason(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    if parts and parts[0] == "__MACOSX":
        return "macOS metadata"
    if any(p.startswith(".") and p not in (".", "..") for p in parts):
        return "hidden file"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in (*IMAGE_SUFFIXES, ".txt"):
        return f"not an image ({suffix or 'no extension'})"
    return None


def extract(archive: Path, into: Path) -> list[str]:
    """Unpack the images and captions of a zip or tar into `into`; the member names
    kept. Unsafe paths (absolute, `..`) are refused rather than written elsewhere."""
    if not archive.is_file():
        raise InputError(f"{INPUT}: no file {archive}. Give a .zip or .tar of images.")
    if archive.stat().st_size == 0:
        raise InputError(f"{INPUT}: {archive.name} is empty (0 bytes). Upload the archive again.")
    kind = _kind(archive)
    if kind not in ("zip", "tar"):
        raise InputError(
            f"{INPUT}: {archive.name} is {kind}, not a zip or tar. Pack the images with "
            "`zip -r images.zip folder/` or `tar -cf images.tar folder/`."
        )
    kept, skipped, seen = [], [], []
    try:
        with _open(archive, kind) as members:
            for name, size, read in members:
                seen.append(name)
                reason = _skip_reason(name)
                if reason:
                    skipped.append(f"{name} ({reason})")
                    continue
                if size > MAX_INPUT_BYTES:
                    raise InputError(
                        f"{INPUT}: {name} in {archive.name} is {size / 2**20:.0f} MiB, over "
                        f"the limit of {MAX_INPUT_BYTES // 2**20} MiB. Downscale it."
                    )
                target = (into / name).resolve()
                if into.resolve() not in target.parents:
                    raise InputError(f"{INPUT}: {archive.name} holds an unsafe path {name!r}.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with read() as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 2**20)
                kept.append(name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        where = f" at {seen[-1]}" if seen else ""
        raise InputError(
            f"{INPUT}: {archive.name} is a broken {kind} archive{where} ({err}). Create it again."
        ) from None
    if skipped:
        log.info(f"Skipped {len(skipped)} files in {archive.name}: {', '.join(skipped)}")
    if not any(PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES for n in kept):
        listed = ", ".join(seen[:10]) or "nothing"
        raise InputError(
            f"{INPUT}: {archive.name} holds no images ({', '.join(IMAGE_SUFFIXES)}); it "
            f"holds: {listed}. Put the training images in the archive."
        )
    return kept


@contextmanager
def _open(archive: Path, kind: str) -> Iterator[list]:
    """(name, size, opener) of every regular file in the archive."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as z:
            files = [i for i in z.infolist() if not i.is_dir()]
            _check_count(archive, files)
            yield [(i.filename, i.file_size, lambda i=i: z.open(i)) for i in files]
    else:
        with tarfile.open(archive) as t:
            files = [m for m in t.getmembers() if m.isfile()]
            _check_count(archive, files)
            yield [(m.name, m.size, lambda m=m: t.extractfile(m)) for m in files]


def _check_count(archive: Path, files: list) -> None:
    if len(files) > MAX_ARCHIVE_MEMBERS:
        raise InputError(
            f"{INPUT}: {archive.name} holds {len(files)} files; the limit is "
            f"{MAX_ARCHIVE_MEMBERS}. Train on fewer images."
        )


def _stem(name: str) -> str:
    return PurePosixPath(name).with_suffix("").as_posix()


def load_images(folder: Path, names: list[str], *, pairs: bool = False) -> list[TrainImage]:
    """The extracted images with their captions, in name order. With `pairs` (Kontext),
    each NAME.<ext> is the picture after an edit, NAME_start.<ext> the one before (any
    image format) and NAME.txt the instruction; a result without its start image is
    refused, naming the file."""
    texts = {_stem(n): n for n in names if n.endswith(".txt")}
    pictures = sorted(n for n in names if PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES)
    starts = {}
    if pairs:
        starts = {_stem(n).removesuffix(START_SUFFIX): n for n in pictures
                  if _stem(n).endswith(START_SUFFIX)}  # fmt: skip
        pictures = [n for n in pictures if not _stem(n).endswith(START_SUFFIX)]
    images, used = [], set()
    for name in pictures:
        stem = _stem(name)
        image, alpha = load_image_and_alpha(folder / name, input_name=f"{INPUT}: {name}",
                                            background=NEUTRAL)  # fmt: skip
        if alpha is not None and alpha.getextrema()[1] == 0:
            raise InputError(
                f"{INPUT}: {name} is fully transparent, so there is nothing to learn from it. "
                "Remove it from the archive."
            )
        caption = None
        if stem in texts:
            used.add(texts[stem])
            raw = (folder / texts[stem]).read_bytes().decode("utf-8-sig", errors="replace")
            caption = " ".join(raw.split()) or None
        start = _start_image(folder, name, starts) if pairs else None
        images.append(TrainImage(name, image, alpha, caption, start))
    unpaired = sorted(set(starts) - {_stem(i.name) for i in images})
    if unpaired:
        names = ", ".join(starts[stem] for stem in unpaired)
        log.info(f"Start images without a picture after the edit (ignored): {names}")
    orphans = sorted(set(texts.values()) - used)
    if orphans:
        log.info(f"Captions without an image beside them (ignored): {', '.join(orphans)}")
    masked = [i.name for i in images if i.mask is not None]
    if masked:
        log.info(
            f"{len(masked)} images have transparent pixels, composited on grey and left out "
            f"of the loss: {', '.join(masked)}"
        )
    return images


def _start_image(folder: Path, name: str, starts: dict[str, str]) -> Image.Image:
    stem = _stem(name)
    if stem not in starts:
        raise InputError(
            f"{INPUT}: {name} has no start image {stem}{START_SUFFIX}.<ext> beside it. A "
            f"Kontext pair is NAME.png (after the edit), NAME{START_SUFFIX}.png (before; any "
            "image format) and NAME.txt (the instruction): add the start image, or remove "
            f"{name}."
        )
    start, _ = load_image_and_alpha(folder / starts[stem], input_name=f"{INPUT}: {starts[stem]}",
                                    background=NEUTRAL)  # fmt: skip
    return start


def with_trigger(caption: str | None, trigger: str) -> str:
    """The caption trained: the trigger word alone without one, prepended when missing."""
    if not trigger:
        return caption or ""
    if not caption:
        return trigger
    if trigger.lower() in caption.lower():
        return caption
    return f"{trigger}, {caption}"


def parse_resolutions(text: str) -> tuple[int, ...]:
    """'512,768,1024' -> (512, 768, 1024), each a multiple of 64 from 64 to 4096."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        values = ()
    if not values or any(v < 64 or v > 4096 or v % BUCKET_STEP for v in values):
        raise InputError(
            f"resolution={text!r} is not a list of sizes: use comma-separated sides in "
            f"pixels, multiples of {BUCKET_STEP} from 64 to 4096, e.g. '512,768,1024'."
        )
    return values


@dataclass(frozen=True)
class Sample:
    """One image at one bucket size: what a batch holds."""

    image: int  # index into the images
    width: int
    height: int


def buckets_for(image: Image.Image, resolutions: tuple[int, ...]) -> list[tuple[int, int]]:
    """(width, height) buckets this image trains at: the nearest-shaped bucket of every
    resolution that fits inside it, or its own size rounded down if none does."""
    from diffusers.training_utils import find_nearest_bucket, generate_aspect_ratio_buckets

    width, height = image.size
    sizes = []
    for resolution in resolutions:
        options = generate_aspect_ratio_buckets(resolution, divisibility=BUCKET_STEP)
        bucket_h, bucket_w = options[find_nearest_bucket(height, width, options)]
        if bucket_w <= width and bucket_h <= height:
            sizes.append((bucket_w, bucket_h))
    if sizes:
        return sorted(set(sizes))
    own = (max(width // BUCKET_STEP, 1) * BUCKET_STEP, max(height // BUCKET_STEP, 1) * BUCKET_STEP)
    return [own]


def make_samples(images: list[TrainImage], resolutions: tuple[int, ...]) -> list[Sample]:
    samples = []
    for index, item in enumerate(images):
        sizes = buckets_for(item.image, resolutions)
        if max(w * h for w, h in sizes) < resolutions[0] ** 2:
            w, h = item.image.size
            log.info(
                f"{item.name} is {w}x{h}, smaller than resolution {resolutions[0]}: trained at "
                f"{sizes[0][0]}x{sizes[0][1]} (images are never upscaled)"
            )
        samples += [Sample(index, w, h) for w, h in sizes]
    return samples


def crop_box(image: Image.Image, width: int, height: int) -> tuple[float, tuple[int, int]]:
    """The scale (<= 1) that makes the image cover the bucket, and the centre crop's
    top-left corner (x, y) in the scaled image."""
    scale = max(width / image.width, height / image.height)
    scaled = (round(image.width * scale), round(image.height * scale))
    return scale, ((scaled[0] - width) // 2, (scaled[1] - height) // 2)


def prepare(item: TrainImage, sample: Sample) -> dict:
    """Pixels in [-1, 1] (3, H, W), the mask in [0, 1] (1, H, W) or None, and SDXL's
    size conditioning: original size and crop corner, both (height, width) order."""
    scale, (left, top) = crop_box(item.image, sample.width, sample.height)
    size = (round(item.image.width * scale), round(item.image.height * scale))
    box = (left, top, left + sample.width, top + sample.height)

    def fit(picture: Image.Image) -> np.ndarray:
        return np.asarray(picture.resize(size, Image.Resampling.LANCZOS).crop(box), np.float32)

    pixels = torch.from_numpy(fit(item.image)).permute(2, 0, 1) / 127.5 - 1.0
    mask = None
    if item.mask is not None:
        mask = torch.from_numpy(fit(item.mask))[None] / 255.0
    prepared = {
        "pixels": pixels,
        "mask": mask,
        "original_size": (item.image.height, item.image.width),
        "crop_top_left": (top, left),
    }
    if item.start is not None:  # the same bucket, the start picture cropped its own way
        start_scale, (x, y) = crop_box(item.start, sample.width, sample.height)
        fitted = item.start.resize(
            (round(item.start.width * start_scale), round(item.start.height * start_scale)),
            Image.Resampling.LANCZOS,
        ).crop((x, y, x + sample.width, y + sample.height))
        start = torch.from_numpy(np.asarray(fitted, np.float32)).permute(2, 0, 1)
        prepared["start_pixels"] = start / 127.5 - 1.0
    return prepared


class Schedule:
    """Global batches as a pure function of (seed, step). Each epoch shuffles every
    bucket's samples and chunks them into batches of `batch_size` (the last one topped
    up from the bucket's start), then shuffles the batches."""

    def __init__(self, samples: list[Sample], batch_size: int, seed: int):
        self.samples, self.batch_size, self.seed = samples, batch_size, seed
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, sample in enumerate(samples):
            self.buckets.setdefault((sample.width, sample.height), []).append(index)
        self.per_epoch = sum(-(-len(m) // batch_size) for m in self.buckets.values())
        small = [f"{w}x{h}" for (w, h), m in self.buckets.items() if len(m) < batch_size]
        if small:
            log.info(
                f"Buckets with fewer samples than the batch of {batch_size} repeat samples "
                f"within a batch: {', '.join(small)}"
            )

    def _epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for size in sorted(self.buckets):
            members = [self.buckets[size][i] for i in rng.permutation(len(self.buckets[size]))]
            for start in range(0, len(members), self.batch_size):
                batch = [members[(start + k) % len(members)] for k in range(self.batch_size)]
                batches.append(batch)
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch(self, step: int) -> list[Sample]:
        """The global batch of step `step` (0-based)."""
        epoch, index = divmod(step, self.per_epoch)
        return [self.samples[i] for i in self._epoch(epoch)[index]]


def sample_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The random stream of one sample of one step: noise, timestep, caption dropout and
    the VAE's posterior draw come from it, so any split of a batch over processes, and
    any resume, draws the same numbers."""
    state = np.random.SeedSequence([seed, step, position]).generate_state(1, np.uint64)[0]
    return torch.Generator("cpu").manual_seed(int(state) & (2**63 - 1))

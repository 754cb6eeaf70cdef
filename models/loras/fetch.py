"""Fetching a LoRA source (models/loras/kinds.py) to one local .safetensors file, and
`LoraFetcher`, which does so through the disk cache. What the kinds share is here too:
downloading, and naming an HTTP failure with its fix.

What a download holds is read from its bytes, not its name: a .safetensors, a .tar or
.zip holding one (only the chosen member is extracted), or a web page / pickle, refused
with the reason. Every failure is an InputError naming the input and what to do.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from models.errors import InputError
from models.log import log
from models.loras.cache import LoraCache
from models.loras.source import LORA_FILE, Hosts, LoraSource, Tokens, pick_file
from models.settings import Settings

# The largest published LoRAs (FLUX, rank 128 with text encoders) are about 1.3 GB; full
# checkpoints (SDXL 6.9 GB, FLUX 23 GB) are refused before they are downloaded.
MAX_LORA_BYTES = 4 * 2**30


def fetch_source(source: LoraSource, dest: Path, tokens: Tokens, hosts: Hosts) -> dict:
    """Write the LoRA named by `source` to dest/lora.safetensors; return what was picked."""
    work = Path(tempfile.mkdtemp(prefix="lora-fetch-"))
    try:
        found = source.fetch(work, tokens, hosts)
        return _place(source, found, dest / LORA_FILE, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download(source: LoraSource, url: str, headers: dict, work: Path) -> Path:
    """Download `url` for `source` into `work` (at most MAX_LORA_BYTES); HTTP and network
    failures become InputErrors naming the input and the fix."""
    from models.weights.download import DownloadError, download_url

    try:
        return download_url(url, work / "download", headers=headers, max_bytes=MAX_LORA_BYTES)
    except DownloadError as err:
        cause = err.__cause__
        if isinstance(cause, urllib.error.HTTPError):
            raise http_error(source, cause.code) from None
        raise InputError(
            f"{source.input_name}: could not download {source.describe()}: {err}"
        ) from None


def http_error(source: LoraSource, code: int) -> InputError:
    where, name = source.describe(), source.input_name
    if code in (401, 403):
        fix = (
            f"set {source.token_input} to a token of an account that may download it"
            if source.token_input
            else "the link may have expired or be private; use a public or freshly signed URL"
        )
        return InputError(f"{name}: HTTP {code}, access denied to {where}: {fix}.")
    if code == 404:
        return InputError(f"{name}: HTTP 404, nothing at {where}. Check it.{source.not_found_hint}")
    return InputError(f"{name}: HTTP {code} from {where}. Try again later.")


def log_pick(source: LoraSource, names: list[str], chosen: str, why: str) -> None:
    others = [n for n in names if n.lower().endswith(".safetensors") and n != chosen]
    if others:
        log.info(
            f"{source.input_name}: {source.describe()} holds {len(others) + 1} .safetensors "
            f"files; using {chosen} ({why}). Others: {', '.join(others[:5])}. Name a file to "
            "pick another."
        )


def _kind_of(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if len(head) >= 9 and head[8:9] == b"{":
        (length,) = struct.unpack("<Q", head[:8])
        if 0 < length < path.stat().st_size:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[257:262] == b"ustar" or head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        return "tar"
    if head.lstrip()[:1] == b"<":
        return "html"
    if head.startswith(b"\x80"):
        return "pickle"
    return "unknown"


def _place(source: LoraSource, found: Path, target: Path, work: Path) -> dict:
    """Bring whatever was fetched (a file, an archive, a folder) to `target`."""
    name = source.input_name
    if found.is_dir():
        files = [p.relative_to(found).as_posix() for p in found.rglob("*") if p.is_file()]
        if len(files) == 1 and not files[0].endswith(".safetensors"):
            return _place(source, found / files[0], target, work)  # a download's one file
        if not any(f.endswith(".safetensors") for f in files):
            raise InputError(f"{name}: {source.describe()} holds no .safetensors file.")
        chosen, why = pick_file(files)
        log_pick(source, files, chosen, why)
        return _place(source, found / chosen, target, work) | {"picked": chosen}
    if found.stat().st_size == 0:
        raise InputError(f"{name}: {source.describe()} is an empty file.")
    if found.stat().st_size > MAX_LORA_BYTES:
        raise InputError(
            f"{name}: {source.describe()} is {found.stat().st_size / 2**30:.1f} GB: "
            "too large for a LoRA (is it a full checkpoint?)."
        )
    kind = _kind_of(found)
    if kind in ("zip", "tar"):
        inner = work / f"unpacked-{hashlib.sha1(str(found).encode()).hexdigest()[:8]}"
        _unpack_one(source, found, kind, inner)
        return _place(source, inner, target, work)
    if kind != "safetensors":
        raise InputError(f"{name}: {source.describe()} is not a .safetensors file{_WHAT[kind]}.")
    _check_safetensors(source, found)
    if work in found.parents:
        shutil.move(found, target)
    else:  # the user's own file: never moved
        shutil.copyfile(found, target)
    return {}


_WHAT = {
    "html": " but a web page: use the file's download link, not the page's",
    "pickle": ": PyTorch pickle files (.ckpt, .pt, .bin) can run code when loaded and are "
    "refused; convert it to .safetensors",
    "unknown": ", a .tar or a .zip",
}


def _unpack_one(source: LoraSource, archive: Path, kind: str, into: Path) -> None:
    """Extract the archive's chosen .safetensors only (a trained-LoRA tar also holds
    samples and captions), refusing members larger than a LoRA can be."""
    into.mkdir(parents=True)
    name = source.input_name
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as z:
                members = {i.filename: i for i in z.infolist() if not i.is_dir()}
                chosen = _archive_choice(source, list(members))
                if members[chosen].file_size > MAX_LORA_BYTES:
                    raise InputError(f"{name}: {chosen} in the archive is too large for a LoRA.")
                with z.open(chosen) as src, open(into / "lora.safetensors", "wb") as dst:
                    shutil.copyfileobj(src, dst, 2**20)
        else:
            with tarfile.open(archive) as t:
                members = {m.name: m for m in t.getmembers() if m.isfile()}
                chosen = _archive_choice(source, list(members))
                if members[chosen].size > MAX_LORA_BYTES:
                    raise InputError(f"{name}: {chosen} in the archive is too large for a LoRA.")
                with (
                    t.extractfile(members[chosen]) as src,
                    open(into / "lora.safetensors", "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst, 2**20)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise InputError(
            f"{name}: the archive from {source.describe()} is broken ({err})."
        ) from None


def _archive_choice(source: LoraSource, names: list[str]) -> str:
    names = [n for n in names if not PurePosixPath(n).name.startswith((".", "._"))]
    if not any(n.endswith(".safetensors") for n in names):
        listed = ", ".join(names[:8]) or "nothing"
        raise InputError(
            f"{source.input_name}: the archive from {source.describe()} holds no "
            f".safetensors file (it holds {listed})."
        )
    chosen, why = pick_file(names)
    log_pick(source, names, chosen, why)
    return chosen


def _check_safetensors(source: LoraSource, path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as err:  # safetensors raises its own error types for bad headers
        raise InputError(
            f"{source.input_name}: {source.describe()} is not a readable "
            f".safetensors file ({err}). Download it again or check the link."
        ) from None
    if not keys:
        raise InputError(f"{source.input_name}: {source.describe()} holds no tensors.")


@dataclass
class LoraFetcher:
    """Fetches a request's LoRA into the disk cache (models/loras/cache.py), once: the
    same source asked for again is read from disk."""

    cache: LoraCache
    hosts: Hosts

    @classmethod
    def from_settings(cls, settings: Settings) -> LoraFetcher:
        cache = LoraCache(settings.lora_cache_dir, int(settings.lora_cache_gb * 1e9))
        hosts = Hosts(settings.hf_endpoint, settings.civitai_endpoint, settings.replicate_endpoint)
        return cls(cache, hosts)

    @contextmanager
    def fetched(self, source: LoraSource, tokens: Tokens) -> Iterator[Path]:
        started = time.perf_counter()
        fetch = partial(fetch_source, source, tokens=tokens, hosts=self.hosts)
        with self.cache.entry(source.canonical(), fetch) as (path, hit):
            took = time.perf_counter() - started
            if hit:
                log.info(f"{source.input_name}: {source.describe()} read from the disk cache")
            else:
                size = path.stat().st_size / 1e6
                what = f"{source.describe()} ({size:.1f} MB)"
                log.info(f"{source.input_name}: fetched {what} in {took:.2f}s")
            yield path

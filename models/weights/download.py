"""Fetch one weights source by URL into a folder, like Replicate's `pget`.

Parallel ranged requests write into one partial file that survives an interruption;
a resumed download goes on only while the server's ETag (or Last-Modified) is the one
it started with, so a re-uploaded file is never stitched from two versions. The result
is checked against its sha256 (always computed and logged, so that it can be recorded),
and `dest` appears only once its contents are complete: a tar is extracted into it
(models/weights/unpack.py: resumable, without doubling the disk needed), any other file lands
as `dest/<basename of the URL path>`.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import unquote, urlsplit

from models.log import log
from models.weights.unpack import TAR_SUFFIXES, unpack

_BLOCK = 2**20
# What one ranged request fetches, and what an interruption can lose.
CHUNK_SIZE = 16 * 2**20
# What a dropped connection, a timeout or a refused one raises from urllib.
_NET_ERRORS = (OSError, http.client.HTTPException)


class DownloadError(RuntimeError):
    """A download failed. The message names the URL and says what to do. `resumable`:
    what was fetched is kept, and fetching the same URL into the same dest resumes."""

    def __init__(self, message: str, *, resumable: bool = False):
        super().__init__(message)
        self.resumable = resumable


class _Changed(Exception):
    pass


def redact(url: str) -> str:
    """The URL for logs and messages: a query string (a signed URL's signature, a token)
    is left out."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


class _TooLarge(Exception):
    pass


class _Redirects(urllib.request.HTTPRedirectHandler):
    # A token meant for the origin must not travel to the host it redirects to:
    # it would leak, and presigned storage URLs refuse a second credential.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def download_url(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    connections: int = 8,
    chunk_size: int | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
    max_bytes: int | None = None,
) -> Path:
    """Fetch `url` into the folder `dest` and return `dest`.

    With `max_bytes`, a larger file is refused before (or, without a known size, while)
    it is fetched.

    Calling again with the same url and dest after an interruption fetches only
    the missing chunks. Raises DownloadError, whose message says what to do.
    """
    dest = Path(dest)
    if dest.exists():
        raise DownloadError(
            f"Not downloading {redact(url)}: {dest} exists. Remove it to re-download."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial"
    state_file, data = staging / "state.json", staging / "data"
    started = time.monotonic()
    state = _read_state(state_file)
    if state.get("url") == url and state.get("stage") == "unpack" and data.exists():
        fetched = 0  # downloaded and checked by an earlier call that stopped while unpacking
    else:
        chunk_size = chunk_size or CHUNK_SIZE
        fetched = _fetch(url, dest, headers, timeout, max_bytes, chunk_size, connections)
        digest = _verify(data, url, sha256, staging)
        _write_state(state_file, {"url": url, "stage": "unpack", "sha256": digest})
    total = data.stat().st_size
    _install(data, url, dest, staging)
    shutil.rmtree(staging, ignore_errors=True)
    secs = time.monotonic() - started
    speed = fetched / 1e6 / max(secs, 1e-6)  # this call's bytes only, when resumed
    log.info("Downloaded %s: %.1f MB in %.1f s (%.1f MB/s)", redact(url), total / 1e6, secs, speed)
    return dest


def _fetch(url, dest, headers, timeout, max_bytes, chunk_size, connections) -> int:
    """Fetch `url` into staging/data, resuming what an earlier call left; bytes fetched."""
    staging = dest.parent / f".{dest.name}.partial"
    # Built per call so that proxy settings are read from the environment now.
    opener = urllib.request.build_opener(_Redirects)
    get = functools.partial(_open, opener, url, dict(headers or {}), timeout)
    try:
        size, validator, stream = _probe(get)
    except _NET_ERRORS as e:
        raise _explain(e, url, dest) from e
    if size is not None and max_bytes is not None and size > max_bytes:
        raise DownloadError(
            f"{redact(url)} is {size / 2**30:.1f} GiB, over the {max_bytes / 2**30:.1f} GiB limit."
        )
    if size is None:
        log.info("Downloading %s (no range support: one connection, no resuming)", redact(url))
        return _stream(stream, url, staging, max_bytes)
    log.info("Downloading %s (%.1f MB, %d connections)", redact(url), size / 1e6, connections)
    try:
        return _fetch_ranged(get, url, staging, size, validator, chunk_size, connections)
    except _Changed:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(
            f"{redact(url)} changed on the server while it was being downloaded (its ETag or "
            "Last-Modified differs): what was fetched was deleted. Run the same command again "
            "to download the new version."
        ) from None


def _open(opener, url, headers, timeout, byte_range=None, if_range=None):
    if byte_range is not None:
        headers = {**headers, "Range": f"bytes={byte_range[0]}-{byte_range[1]}"}
    if if_range is not None:
        # A changed file is then answered whole (200) instead of the asked-for range.
        headers = {**headers, "If-Range": if_range}
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _probe(get):
    """(size, validator, None) when the server serves ranges, else (None, None, a response
    to stream). The validator is a strong ETag, else Last-Modified, else None."""
    # A one-byte GET rather than HEAD: some signed CDN URLs are valid for GET only,
    # and a 206 answer proves ranges work where `Accept-Ranges` may not be sent.
    try:
        resp = get((0, 0))
    except urllib.error.HTTPError as e:
        if e.code != 416:  # an empty file has no byte 0 to ask for
            raise
        return None, None, get()
    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
    etag = resp.headers.get("ETag")
    validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
    if resp.status == 206 and total.isdigit():
        resp.close()
        return int(total), validator, None
    if resp.status == 206:  # a range, but no total size to split by
        resp.close()
        resp = get()
    return None, None, resp


def _stream(resp, url, staging, max_bytes: int | None = None) -> int:
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    length = resp.headers.get("Content-Length")
    try:
        with resp, open(staging / "data", "wb") as f:
            while block := resp.read(_BLOCK):
                f.write(block)
                if max_bytes is not None and f.tell() > max_bytes:
                    raise _TooLarge(
                        f"{redact(url)} is larger than the {max_bytes / 2**30:.1f} GiB limit."
                    )
            got = f.tell()
        if length is not None and got != int(length):
            raise ConnectionError(f"connection closed after {got} of {length} bytes")
    except _TooLarge as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(str(e)) from None
    except _NET_ERRORS as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise _interrupted(url, e, resumable=False) from e
    return got


def _fetch_ranged(get, url, staging, size, validator, chunk_size, connections) -> int:
    chunks = [(a, min(a + chunk_size, size) - 1) for a in range(0, size, chunk_size)]
    state_file, data = staging / "state.json", staging / "data"
    wanted = {"url": url, "size": size, "chunk_size": chunk_size, "validator": validator}
    state = _read_state(state_file)
    if data.exists() and all(state.get(k) == v for k, v in wanted.items()):
        done = {i for i in state.get("done", []) if 0 <= i < len(chunks)}
        log.info("Resuming %s: %d of %d chunks already here", redact(url), len(done), len(chunks))
    else:  # nothing to resume, or the source changed since: start over
        if state.get("url") == url:
            log.info(
                "%s changed since the interrupted download (size or ETag): starting over",
                redact(url),
            )
        shutil.rmtree(staging, ignore_errors=True)
        done = set()
    staging.mkdir(parents=True, exist_ok=True)
    fd = os.open(data, os.O_WRONLY | os.O_CREAT, 0o644)

    def fetch(i: int) -> int:
        start, end = chunks[i]
        with get((start, end), validator) as resp:
            answer = resp.headers.get("Content-Range", "")
            if resp.status == 200 and validator is not None:
                raise _Changed()
            if resp.status != 206 or not answer.startswith(f"bytes {start}-"):
                raise ConnectionError(f"asked for bytes {start}-{end}, got HTTP {resp.status}")
            pos = start
            while pos <= end:
                block = resp.read(min(_BLOCK, end + 1 - pos))
                if not block:
                    got, want = pos - start, end + 1 - start
                    raise ConnectionError(f"connection closed after {got} of {want} bytes")
                if os.pwrite(fd, block, pos) != len(block):
                    raise OSError(f"short write to {data} (disk full?)")
                pos += len(block)
        return end + 1 - start

    def cancel_queued() -> None:
        # Chunks in flight finish and are recorded; queued ones wait for the next call.
        # (Not pool.shutdown(cancel_futures=True): as_completed never hears of those.)
        for fut in futures:
            fut.cancel()

    first_error, fetched = None, 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, connections)) as pool:
            futures = {pool.submit(fetch, i): i for i in range(len(chunks)) if i not in done}
            try:
                for fut in as_completed(futures):
                    if fut.cancelled():
                        continue
                    if fut.exception() is None:
                        fetched += fut.result()
                        done.add(futures[fut])
                        _write_state(state_file, {**wanted, "done": sorted(done)})
                    elif first_error is None:
                        first_error = fut.exception()
                        cancel_queued()
            finally:  # also on Ctrl-C, which would otherwise wait for every queued chunk
                cancel_queued()
    finally:
        os.close(fd)
    if isinstance(first_error, _Changed):
        raise first_error
    if first_error is not None:
        kept = f"{len(done)} of {len(chunks)} chunks are kept in {staging}"
        raise _interrupted(url, first_error, resumable=True, kept=kept) from first_error
    return fetched


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: dict) -> None:
    # Replace rather than rewrite, so a kill mid-write cannot leave half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def _verify(data: Path, url: str, sha256: str | None, staging: Path) -> str:
    """The file's sha256, checked against `sha256` when one is known."""
    with open(data, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if sha256 is None:
        log.info("sha256 of %s: %s (no checksum to compare with)", redact(url), actual)
        return actual
    if actual != sha256.lower():
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(
            f"sha256 mismatch for {redact(url)}: expected {sha256}, got {actual}. The source may "
            "have changed or been corrupted; the download was deleted. Check the URL and "
            "checksum in models/weights/manifest.py."
        )
    return actual


def _install(data: Path, url: str, dest: Path, staging: Path) -> None:
    name = posixpath.basename(unquote(urlsplit(url).path))
    if name in ("", ".", ".."):
        name = "download"
    files = staging / "files"
    if name.endswith(TAR_SUFFIXES):
        try:
            unpack(data, name, files, staging / "unpack.json")
        except tarfile.TarError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise DownloadError(
                f"The archive from {redact(url)} is broken or unsafe ({e}); nothing was extracted "
                "and the download was deleted. Check the source."
            ) from e
    else:
        shutil.rmtree(files, ignore_errors=True)
        files.mkdir()
        os.replace(data, files / name)
    os.replace(files, dest)


def _interrupted(url: str, err: BaseException, *, resumable: bool, kept: str = ""):
    if resumable:
        again = f"{kept}; running the same command again resumes it"
    else:
        again = "Running the same command again starts it over (the server cannot resume)"
    message = f"Download of {redact(url)} was interrupted ({err}). {again}."
    return DownloadError(message, resumable=resumable)


def _explain(err: BaseException, url: str, dest: Path) -> DownloadError:
    if isinstance(err, urllib.error.HTTPError):
        if err.code in (401, 403):
            return DownloadError(
                f"HTTP {err.code} for {redact(url)}: the source needs a token or access. For a "
                "gated Hugging Face repo, accept its licence on huggingface.co and set HF_TOKEN."
            )
        if err.code == 404:
            return DownloadError(f"HTTP 404 for {redact(url)}: not found. Check the URL.")
        return DownloadError(
            f"HTTP {err.code} ({err.reason}) for {redact(url)}. Try again later, "
            f"or place the weights in {dest} by hand."
        )
    reason = getattr(err, "reason", err)
    return DownloadError(
        f"Could not reach {urlsplit(url).hostname} for {redact(url)} ({reason}). No network may be "
        f"available here; the weights can also be placed in {dest} by hand."
    )

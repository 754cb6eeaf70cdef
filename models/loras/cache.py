"""Downloaded LoRAs on disk: one folder per source, least recently used evicted first.

<root>/<key>/lora.safetensors, plus source.json saying where it came from. The key is a
hash of the source, so the same LoRA asked for again is read from disk. A fetch writes
into a private temporary folder that is renamed into place under a per-key file lock:
two requests or two processes asking for the same LoRA fetch it once, and nobody ever
reads half a file. Eviction skips entries whose lock is held (in use elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from models.log import log
from models.loras.source import LORA_FILE

_INFO_FILE = "source.json"
_LOCKS = ".locks"
# A temporary folder this old belongs to a process that died mid-fetch.
_STALE_TMP_S = 3600


def cache_key(canonical: str) -> str:
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class LoraCache:
    def __init__(self, root: Path, budget_bytes: int):
        self.root = Path(root)
        self.budget = budget_bytes

    def _lock(self, key: str) -> FileLock:
        (self.root / _LOCKS).mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / _LOCKS / f"{key}.lock")

    @contextmanager
    def entry(self, canonical: str, fetch: Callable[[Path], dict]) -> Iterator[tuple[Path, bool]]:
        """Yield (path of the cached LoRA, whether it was already here), fetching it with
        `fetch(folder)` first if needed: fetch writes folder/lora.safetensors and returns
        what source.json should record. The entry is locked while the caller reads it."""
        key = cache_key(canonical)
        folder = self.root / key
        with self._lock(key):
            hit = (folder / LORA_FILE).is_file()
            if hit:
                os.utime(folder)  # most recently used
            else:
                self._fetch_into(folder, canonical, fetch)
            yield folder / LORA_FILE, hit
        if not hit:
            self.evict(keep=key)

    def _fetch_into(self, folder: Path, canonical: str, fetch: Callable[[Path], dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=self.root))
        try:
            info = fetch(tmp)
            if not (tmp / LORA_FILE).is_file():
                raise RuntimeError(f"fetching {canonical} wrote no {LORA_FILE}")
            info = {"source": canonical, "fetched_at": time.time(), **info}
            (tmp / _INFO_FILE).write_text(json.dumps(info, indent=1))
            shutil.rmtree(folder, ignore_errors=True)  # a broken leftover without the file
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def evict(self, keep: str = "") -> None:
        """Remove least recently used entries until the cache fits its budget."""
        if not self.root.is_dir():
            return
        now = time.time()
        entries = []
        for path in self.root.iterdir():
            if path.name.endswith(".tmp") and now - path.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and not path.name.startswith("."):
                entries.append((path.stat().st_mtime, path))
        sized = [(mtime, path, _size(path)) for mtime, path in sorted(entries)]
        total = sum(size for _, _, size in sized)
        for _, path, size in sized:
            if total <= self.budget:
                break
            if path.name == keep:
                continue
            lock = self._lock(path.name)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being fetched or read right now
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                lock.release()
            total -= size
            log.info(f"LoRA cache: evicted {path.name} ({size / 1e6:.1f} MB, least recently used)")
        if total > self.budget:
            log.info(
                f"LoRA cache holds {total / 1e9:.2f} GB, over its {self.budget / 1e9:.2f} GB "
                "budget: the rest is in use or just fetched."
            )

"""Unpacking a downloaded weights archive without needing twice its size on disk.

An uncompressed .tar (what Replicate's CDN serves) is read member by member, and the
archive's bytes already extracted are given back to the filesystem as it goes (Linux
hole punching): peak disk is the archive plus one member, not the archive plus all of
them. How far it got is recorded after each member, so an interrupted extraction
resumes there. A compressed tar cannot restart part-way: it is extracted in one go.
Either way tarfile's "data" filter refuses absolute paths, `..`, links out of the
folder and device files.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tarfile
from pathlib import Path

from models.log import log

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# fallocate(2) modes: free the range's blocks, keep the file's size.
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01
_PAGE = 4096


def unpack(archive: Path, name: str, into: Path, progress: Path) -> None:
    """Extract `archive` (named `name` at its source) into the folder `into`, recording
    progress in the file `progress`. Raises tarfile.TarError for a broken or unsafe one."""
    if not name.endswith(".tar"):
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
        return
    start = _read_offset(progress) if into.is_dir() else 0
    if start:
        log.info(f"Resuming the extraction of {name} at {start / 1e6:.1f} MB")
    else:
        shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True, exist_ok=True)
    released = start - start % _PAGE
    with open(archive, "r+b") as f:
        f.seek(start)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                tar.extract(member, into, filter="data")
                done = start + tar.offset  # where the next member's header begins
                _write_offset(progress, done)
                released = release(f.fileno(), released, done - done % _PAGE)
    progress.unlink(missing_ok=True)


_can_punch = True  # until the filesystem says otherwise


def release(fd: int, start: int, end: int) -> int:
    """Free the blocks of bytes [start, end) of the file; return how far is now freed."""
    global _can_punch
    if end <= start or not _can_punch:
        return start
    err = _fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, start, end - start)
    if err:
        _can_punch = False
        log.info(
            f"This filesystem cannot free an archive's space while extracting it "
            f"({errno.errorcode.get(err, err)}): it needs room for the archive and its "
            "contents at once."
        )
        return start
    return end


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """0, or the errno of libc's fallocate (ENOSYS where there is none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.fallocate
    except (OSError, AttributeError):
        return errno.ENOSYS
    call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    return ctypes.get_errno() if call(fd, mode, offset, length) != 0 else 0


def _read_offset(progress: Path) -> int:
    try:
        offset = json.loads(progress.read_text())["offset"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return offset if isinstance(offset, int) and offset >= 0 else 0


def _write_offset(progress: Path, offset: int) -> None:
    tmp = progress.with_name(progress.name + ".tmp")
    tmp.write_text(json.dumps({"offset": offset}))
    os.replace(tmp, progress)

"""Turn a manifest name into a local folder: weights/<name>.

Order: an existing folder wins (once checked whole); a `build` entry is generated
locally; otherwise each source is tried in turn. Every path into weights/<name> is an
atomic rename of a download that finished, was checked against its checksums and holds
every file its pipeline needs, so a half-finished download never looks like weights.
One process fetches a given entry at a time (a file lock).

Interruptions, one rule: resume first. An interrupted download is kept and resumed
(right away a few times, then on the next run, where its source is again tried first);
once the weights are in place from any source, the other sources' leftovers are
deleted, since they will never be resumed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from models.errors import WeightsError
from models.log import log, no_progress_bars
from models.settings import Settings, load_settings
from models.weights.completeness import missing_parts
from models.weights.manifest import DIFFUSERS_FILES, Source, WeightsEntry, get_entry

_BUILD_STAMP = ".build-version"
# In a source's staging folder: its download finished and was checked.
_COMPLETE = ".complete"
# An interrupted URL download is resumed right away this many times in all, pausing
# RESUME_PAUSE_S x attempt between them, before the next source is tried.
RESUME_ATTEMPTS = 3
RESUME_PAUSE_S = 2.0


def _present(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def _build_is_current(folder: Path, version: str) -> bool:
    stamp = folder / _BUILD_STAMP
    return stamp.is_file() and stamp.read_text().strip() == version


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        os.replace(staging, target)
    except OSError:
        # Another process finished first; keep its copy.
        shutil.rmtree(staging, ignore_errors=True)
        if not _present(target):
            raise


def _build(entry: WeightsEntry, target: Path) -> Path:
    from models.weights.builds import BUILDERS, build_version

    version = build_version(entry.build)
    damage = missing_parts(target, entry.borrowed) if target.is_dir() else []
    if _build_is_current(target, version) and not damage:
        return target
    if target.exists():
        older = "it was built from an older models/weights/builds.py or mini/ folder"
        why = "; ".join(damage) or older
        log.info(f"Rebuilding {entry.name}: {why}")
        shutil.rmtree(target)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.build-", dir=target.parent))
    try:
        no_progress_bars()
        BUILDERS[entry.build](staging)
        (staging / _BUILD_STAMP).write_text(version)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(f"Built {entry.name} in {target} ({time.perf_counter() - started:.1f}s)")
    return target


def _download(source: Source, dest: Path, settings: Settings) -> None:
    """Fetch one source into `dest`: whole and checked when this returns, else raises,
    leaving what can be resumed next to `dest`."""
    if source.url:
        from models.weights.download import download_url

        download_url(source.url, dest, sha256=source.sha256)
        return
    _download_hf(source, dest, settings)


def _download_hf(source: Source, dest: Path, settings: Settings) -> None:
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token or False)
    # Pinned to one commit, so that a resumed download cannot mix two versions.
    commit = api.repo_info(source.hf_repo, revision=source.revision).sha
    tree = api.list_repo_tree(source.hf_repo, recursive=True, revision=commit)
    paths = [f.path for f in tree if isinstance(f, RepoFile)]
    patterns = list(source.allow_patterns) or None
    wanted = one_precision(list(filter_repo_objects(paths, allow_patterns=patterns)))
    snapshot_download(
        repo_id=source.hf_repo,
        revision=commit,
        allow_patterns=wanted,
        local_dir=dest,
        token=settings.hf_token or False,
        endpoint=settings.hf_endpoint,
    )
    # The Hub's sha256 of every LFS file (git's sha1 of the others): snapshot_download
    # checks sizes only.
    check = api.verify_repo_checksums(source.hf_repo, revision=commit, local_dir=dest)
    bad = [m["path"] for m in check.mismatches if m["path"] in wanted]
    missing = [path for path in check.missing_paths if path in wanted]
    for path in bad:
        (dest / path).unlink()  # fetched again on the next run
    if bad or missing:
        raise WeightsError(
            f"{source.describe()}: {len(bad)} file(s) did not match the Hub's checksums "
            f"({', '.join(bad[:3])}) and {len(missing)} are missing ({', '.join(missing[:3])}). "
            "Run the same command again to fetch them."
        )
    shutil.rmtree(dest / ".cache", ignore_errors=True)


def one_precision(paths: list[str]) -> list[str]:
    """One precision per folder: its fp16 variant weights when it has them (half the
    download; loading.load_pipeline then asks for that variant), else the plain ones."""

    def is_weights(name: str) -> bool:
        return name.endswith((".safetensors", ".bin")) or (
            name.endswith(".json") and (".safetensors.index" in name or ".bin.index" in name)
        )

    def is_fp16(name: str) -> bool:
        return ".fp16." in name or ".fp16-" in name

    with_fp16 = {posixpath.dirname(p) for p in paths if is_fp16(posixpath.basename(p))}
    return [
        p
        for p in paths
        if not is_weights(posixpath.basename(p))
        or is_fp16(posixpath.basename(p)) == (posixpath.dirname(p) in with_fp16)
    ]


def _pick(root: Path, source: Source, marker: str) -> Path:
    """The folder inside a download that holds the weights, checked for `marker`."""
    folder = root
    if source.subdir:
        matches = [p for p in sorted(root.glob(source.subdir)) if p.is_dir()]
        if len(matches) != 1:
            raise WeightsError(
                f"expected one folder matching {source.subdir!r} in the download, "
                f"found {len(matches)}: the source's layout changed"
            )
        folder = matches[0]
    if not (folder / marker).is_file():
        where = source.subdir or "its top level"
        raise WeightsError(f"the download has no {marker} at {where}: unexpected layout")
    return folder


def _materialise_links(folder: Path) -> None:
    # Hugging Face cache snapshots link into ../../blobs, which stay behind when the
    # snapshot folder moves: replace each link by the file it points to.
    for link in [p for p in folder.rglob("*") if p.is_symlink()]:
        real = link.resolve()
        link.unlink()
        shutil.copyfile(real, link)


def _staging(target: Path, source: Source) -> Path:
    # Per source: a download resumes from its own state in here, and a complete but
    # unused copy (a run stopped right after downloading) is used again.
    tag = hashlib.sha256(source.describe().encode()).hexdigest()[:12]
    return target.parent / f".{target.name}.{tag}.download"


def _install(entry: WeightsEntry, source: Source, target: Path, settings: Settings) -> None:
    staging = _staging(target, source)
    files, complete = staging / "files", staging / _COMPLETE
    if not complete.is_file():
        staging.mkdir(parents=True, exist_ok=True)
        # A URL download's folder appears only once it is whole; a Hugging Face one
        # fills in place, so only the marker written after it returns says it is done.
        if not (source.url and files.is_dir()):
            try:
                _download(source, files, settings)
            except BaseException:
                if not _holds_downloaded_bytes(staging):  # nothing to resume
                    shutil.rmtree(staging, ignore_errors=True)
                raise
        complete.write_text(source.describe())
    try:
        folder = _pick(files, source, entry.marker)
        _materialise_links(folder)
        problems = missing_parts(folder, entry.borrowed)
        if problems:
            raise WeightsError(f"the download is incomplete: {'; '.join(problems)}")
    except WeightsError:
        shutil.rmtree(staging, ignore_errors=True)  # wrong content: never use it again
        raise
    _move_into_place(folder, target)
    shutil.rmtree(staging, ignore_errors=True)


def _holds_downloaded_bytes(staging: Path) -> bool:
    return any(
        p.is_file() and p.stat().st_size and ".cache" not in p.relative_to(staging).parts
        for p in staging.rglob("*")
    )


def _fetch(entry: WeightsEntry, source: Source, target: Path, settings: Settings) -> None:
    """_install, resuming an interrupted URL download right away a few times (resume
    first) before the caller moves on to the next source."""
    from models.weights.download import DownloadError

    for attempt in range(1, RESUME_ATTEMPTS + 1):
        try:
            return _install(entry, source, target, settings)
        except DownloadError as err:
            if not err.resumable or attempt == RESUME_ATTEMPTS:
                raise
            log.info(f"{err} Resuming ({attempt} of {RESUME_ATTEMPTS - 1} retries)...")
            time.sleep(RESUME_PAUSE_S * attempt)


def _clean_other_downloads(target: Path) -> None:
    """Once `target` is in place, what other sources left will never be resumed."""
    for leftover in target.parent.glob(f".{target.name}.*.download"):
        log.info(f"Removing {leftover.name}: {target.name} came from another source")
        shutil.rmtree(leftover, ignore_errors=True)


def _missing_message(entry: WeightsEntry, target: Path, failures: list[str], name: str) -> str:
    lines = [f"Weights for {entry.name!r} are not in {target} and could not be downloaded."]
    lines += [f"  - {failure}" for failure in failures]
    lines.append(f"Fix: run `script/download-weights {name}` on a machine with network,")
    lines.append(f"or put the files (diffusers layout) into {target} yourself.")
    if entry.gated:
        lines.append(
            "This model is gated: accept its licence on huggingface.co and set HF_TOKEN "
            "to a token of that account."
        )
    return "\n".join(lines)


def resolve(name: str, settings: Settings | None = None, *, download: bool = True) -> Path:
    """Return the local folder for manifest entry `name`, fetching or building it if needed."""
    settings = settings or load_settings()
    return _resolve_entry(get_entry(name), settings, download)


_HF_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def resolve_custom(value: str, settings: Settings) -> Path:
    """A user's own weights (MODEL_WEIGHTS): an existing file or folder as it is, or a
    Hugging Face repo id, downloaded once into weights/<owner>--<name> like any entry."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if not _HF_REPO_ID.match(value):
        raise WeightsError(
            f"MODEL_WEIGHTS={value!r} is neither an existing file or folder nor a Hugging "
            "Face repo id (owner/name). Point it at a diffusers folder, a .safetensors "
            "checkpoint, or a repo in diffusers layout."
        )
    source = Source(hf_repo=value, allow_patterns=DIFFUSERS_FILES)
    entry = WeightsEntry(value.replace("/", "--"), sources=(source,))
    return _resolve_entry(entry, settings, download=True, asked_as=value)


def _resolve_entry(
    entry: WeightsEntry, settings: Settings, download: bool, asked_as: str | None = None
) -> Path:
    target = settings.weights_dir / entry.name
    fetch = f"script/download-weights {asked_as or entry.name}"
    if entry.build:
        with _locked(target):
            return _build(entry, target)
    if target.exists():
        return _checked(entry, target, fetch)
    failures = []
    if download:
        # One process fetches; another asking for the same weights waits and uses them.
        with _locked(target):
            if target.exists():
                return _checked(entry, target, fetch)
            for source in entry.sources:
                log.info(f"Downloading {entry.name} from {source.describe()}")
                try:
                    _fetch(entry, source, target, settings)
                except Exception as exc:  # every source failing is reported together below
                    failures.append(f"{source.describe()}: {exc}")
                    continue
                _clean_other_downloads(target)
                return target
    else:
        failures.append("downloading was not allowed")
    raise WeightsError(_missing_message(entry, target, failures, asked_as or entry.name))


def _checked(entry: WeightsEntry, target: Path, fetch: str) -> Path:
    """An existing folder, if it is whole (cheap: file names and safetensors headers)."""
    problems = [] if (target / entry.marker).is_file() else [f"it has no {entry.marker}"]
    problems = problems or missing_parts(target, entry.borrowed)
    if problems:
        raise WeightsError(
            f"{target} is incomplete or not in the expected layout: {'; '.join(problems)}. "
            f"Remove it and run `{fetch}`."
        )
    return target


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    locks = target.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(locks / f"{target.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info(f"Waiting for another process that is fetching or building {target.name}...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> None:
    from models.specs import SPECS

    parser = argparse.ArgumentParser(description="Fetch or build weights into weights/NAME.")
    parser.add_argument(
        "names", nargs="+", help="model variants, manifest entries, or Hugging Face owner/name"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    for name in args.names:
        if _HF_REPO_ID.match(name) and name not in SPECS:
            print(resolve_custom(name, settings))
            continue
        spec = SPECS.get(name)
        entries = spec.weight_entries(safety=settings.safety_checker) if spec else (name,)
        for entry in entries:
            print(resolve(entry, settings))


if __name__ == "__main__":
    main()

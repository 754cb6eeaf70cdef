"""Turn a manifest name into a local folder: weights/<name>.

Order: an existing folder wins; a `build` entry is generated locally; otherwise
each source is tried in turn. Every path into weights/<name> is an atomic
rename, so a half-finished download or build never looks like weights.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from models.errors import WeightsError
from models.log import log
from models.manifest import DIFFUSERS_FILES, Source, WeightsEntry, get_entry
from models.settings import Settings, load_settings

_BUILD_STAMP = ".build-version"


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
    from models.tiny import BUILD_VERSION, BUILDERS

    if _build_is_current(target, BUILD_VERSION):
        return target
    if target.exists():
        log.info(f"Rebuilding {entry.name}: it was built by an older version of models/tiny.py")
        shutil.rmtree(target)
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.build-", dir=target.parent))
    try:
        BUILDERS[entry.build](staging)
        (staging / _BUILD_STAMP).write_text(BUILD_VERSION)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(f"Built {entry.name} in {target} ({time.perf_counter() - started:.1f}s)")
    return target


def _download(source: Source, dest: Path, settings: Settings) -> None:
    """Fetch one source into `dest` (which must not exist yet), as it comes."""
    if source.url:
        from models.download import download_url

        download_url(source.url, dest, sha256=source.sha256)
        return
    from huggingface_hub import snapshot_download

    snapshot_download(
        repo_id=source.hf_repo,
        revision=source.revision,
        allow_patterns=list(source.allow_patterns) or None,
        local_dir=dest,
        token=settings.hf_token,
    )
    shutil.rmtree(dest / ".cache", ignore_errors=True)


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


def _install(entry: WeightsEntry, source: Source, target: Path, settings: Settings) -> None:
    # Per source: a download resumes from its own state next to `staging`, and a
    # complete but unused copy (a run stopped right after downloading) is used again.
    tag = hashlib.sha256(source.describe().encode()).hexdigest()[:12]
    staging = target.parent / f".{target.name}.{tag}.download"
    if not staging.exists():
        _download(source, staging, settings)
    try:
        folder = _pick(staging, source, entry.marker)
    except WeightsError:
        shutil.rmtree(staging, ignore_errors=True)  # wrong content: never use it again
        raise
    _materialise_links(folder)
    _move_into_place(folder, target)
    shutil.rmtree(staging, ignore_errors=True)


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
    if entry.build:
        return _build(entry, target)
    if target.exists():
        if (target / entry.marker).is_file():
            return target
        fetch = f"script/download-weights {asked_as or entry.name}"
        raise WeightsError(
            f"{target} exists but has no {entry.marker}: it is incomplete or not in the "
            f"expected layout. Remove it and run `{fetch}`."
        )
    failures = []
    if download:
        target.parent.mkdir(parents=True, exist_ok=True)
        for source in entry.sources:
            log.info(f"Downloading {entry.name} from {source.describe()}")
            try:
                _install(entry, source, target, settings)
                return target
            except Exception as exc:  # every source failing is reported together below
                failures.append(f"{source.describe()}: {exc}")
    else:
        failures.append("downloading was not allowed")
    raise WeightsError(_missing_message(entry, target, failures, asked_as or entry.name))


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

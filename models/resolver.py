"""Turn a manifest name into a local folder: weights/<name>.

Order: an existing folder wins; a `build` entry is generated locally; otherwise
each source is tried in turn. Every path into weights/<name> is an atomic
rename, so a half-finished download or build never looks like weights.
"""

from __future__ import annotations

import argparse
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


def _fetch_hf(source: Source, target: Path, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.hf-", dir=target.parent))
    try:
        snapshot_download(
            repo_id=source.hf_repo,
            revision=source.revision,
            allow_patterns=list(source.allow_patterns) or None,
            local_dir=staging,
            token=token,
        )
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch(source: Source, target: Path, settings: Settings) -> None:
    if source.url:
        from models.download import download_url

        download_url(source.url, target, sha256=source.sha256)
    else:
        _fetch_hf(source, target, settings.hf_token)


def _missing_message(entry: WeightsEntry, target: Path, failures: list[str]) -> str:
    lines = [f"Weights for {entry.name!r} are not in {target} and could not be downloaded."]
    lines += [f"  - {failure}" for failure in failures]
    lines.append(f"Fix: run `script/download-weights {entry.name}` on a machine with network,")
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
    return _resolve_entry(entry, settings, download=True)


def _resolve_entry(entry: WeightsEntry, settings: Settings, download: bool) -> Path:
    name = entry.name
    target = settings.weights_dir / name
    if entry.build:
        return _build(entry, target)
    if _present(target):
        return target
    failures = []
    if download:
        target.parent.mkdir(parents=True, exist_ok=True)
        for source in entry.sources:
            log.info(f"Downloading {name} from {source.describe()}")
            try:
                _fetch(source, target, settings)
                return target
            except Exception as exc:  # every source failing is reported together below
                failures.append(f"{source.describe()}: {exc}")
    else:
        failures.append("downloading was not allowed")
    raise WeightsError(_missing_message(entry, target, failures))


def main(argv: list[str] | None = None) -> None:
    from models.specs import SPECS

    parser = argparse.ArgumentParser(description="Fetch or build weights into weights/NAME.")
    parser.add_argument("names", nargs="+", help="model variants or manifest entries")
    args = parser.parse_args(argv)
    settings = load_settings()
    for name in args.names:
        spec = SPECS.get(name)
        entries = spec.weight_entries() if spec else (name,)
        for entry in entries:
            print(resolve(entry, settings))


if __name__ == "__main__":
    main()

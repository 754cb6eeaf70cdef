"""Fetching a LoRA source (models/loras/sources.py) to one local .safetensors file.

What a download holds is read from its bytes, not its name: a .safetensors, a .tar or
.zip holding one (only the chosen member is extracted), or a web page / pickle, refused
with the reason. Every failure is an InputError naming the input and what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from models.errors import InputError
from models.log import log
from models.loras.cache import LORA_FILE
from models.loras.sources import Hosts, LoraSource, Tokens, pick_file

# The largest published LoRAs (FLUX, rank 128 with text encoders) are about 1.3 GB; full
# checkpoints (SDXL 6.9 GB, FLUX 23 GB) are refused before they are downloaded.
MAX_LORA_BYTES = 4 * 2**30


def fetch_source(source: LoraSource, dest: Path, tokens: Tokens, hosts: Hosts) -> dict:
    """Write the LoRA named by `source` to dest/lora.safetensors; return what was picked."""
    work = Path(tempfile.mkdtemp(prefix="lora-fetch-"))
    try:
        if source.kind == "path":
            found = Path(source.location)
            if not found.exists():
                raise InputError(f"{source.input_name}: no such file or folder {found}.")
        elif source.kind == "data":
            found = _decode_data_uri(source, work)
        elif source.kind == "huggingface":
            found = _fetch_huggingface(source, work, tokens, hosts)
        else:
            url, headers = _download_url(source, tokens, hosts)
            found = _download(source, url, headers, work)
        return _place(source, found, dest / LORA_FILE, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _decode_data_uri(source: LoraSource, work: Path) -> Path:
    header, comma, payload = source.location.partition(",")
    if not comma or ";base64" not in header:
        raise InputError(f"{source.input_name}: a data: URI must be base64 (data:...;base64,...).")
    if len(payload) * 3 // 4 > MAX_LORA_BYTES:
        raise InputError(f"{source.input_name}: the data: URI is larger than a LoRA can be.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{source.input_name}: the data: URI is not valid base64.") from None
    (work / "data").write_bytes(data)
    return work / "data"


def _download_url(source: LoraSource, tokens: Tokens, hosts: Hosts) -> tuple[str, dict]:
    if source.kind == "url":
        return source.location, {}
    if source.kind == "replicate":
        version = f"/versions/{source.revision}" if source.revision else ""
        return f"{hosts.replicate}/{source.location}{version}/_weights", {}
    # CivitAI: a page without a version means its newest one, which the API names.
    version = source.revision or _civitai_latest_version(source, tokens, hosts)
    headers = {"Authorization": f"Bearer {tokens.civitai}"} if tokens.civitai else {}
    return f"{hosts.civitai}/api/download/models/{version}?type=Model&format=SafeTensor", headers


def _civitai_latest_version(source: LoraSource, tokens: Tokens, hosts: Hosts) -> str:
    url = f"{hosts.civitai}/api/v1/models/{source.location}"
    request = urllib.request.Request(url)
    if tokens.civitai:
        request.add_header("Authorization", f"Bearer {tokens.civitai}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            model = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise _http_error(source, err.code) from None
    except (OSError, ValueError) as err:
        raise InputError(
            f"{source.input_name}: could not ask CivitAI about model "
            f"{source.location} ({err}). Try again, or use its download link."
        ) from None
    kind = str(model.get("type", "")).lower()
    if kind and kind not in ("lora", "locon", "dora", "lycoris"):
        raise InputError(
            f"{source.input_name}: CivitAI model {source.location} is a {model['type']}, not a "
            "LoRA. Pick a LoRA model on CivitAI."
        )
    versions = model.get("modelVersions") or []
    if not versions:
        raise InputError(f"{source.input_name}: CivitAI model {source.location} has no versions.")
    version = str(versions[0]["id"])
    log.info(
        f"CivitAI model {source.location}: using its newest version {version} "
        f"({versions[0].get('name', '')!s}); add ?modelVersionId=N to pick another."
    )
    return version


def _download(source: LoraSource, url: str, headers: dict, work: Path) -> Path:
    from models.weights.download import DownloadError, download_url

    try:
        return download_url(url, work / "download", headers=headers, max_bytes=MAX_LORA_BYTES)
    except DownloadError as err:
        cause = err.__cause__
        if isinstance(cause, urllib.error.HTTPError):
            raise _http_error(source, cause.code) from None
        raise InputError(
            f"{source.input_name}: could not download {source.describe()}: {err}"
        ) from None


def _http_error(source: LoraSource, code: int) -> InputError:
    where, name = source.describe(), source.input_name
    if code in (401, 403):
        token = {"civitai": "civitai_api_token", "huggingface": "hf_api_token"}.get(source.kind)
        fix = (
            f"set {token} to a token of an account that may download it"
            if token
            else ("the link may have expired or be private; use a public or freshly signed URL")
        )
        return InputError(f"{name}: HTTP {code}, access denied to {where}: {fix}.")
    if code == 404:
        hints = {
            "civitai": " A download link's number is a version id, not the page's model id: "
            "paste the model page URL (with ?modelVersionId= for a given version).",
            "replicate": " It must be a model trained on Replicate with a LoRA trainer.",
        }
        return InputError(
            f"{name}: HTTP 404, nothing at {where}. Check it.{hints.get(source.kind, '')}"
        )
    return InputError(f"{name}: HTTP {code} from {where}. Try again later.")


def _fetch_huggingface(source: LoraSource, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=hosts.huggingface, token=tokens.huggingface or False)
    where, name = source.describe(), source.input_name
    try:
        filename = source.filename
        if filename is None:
            files = api.list_repo_files(source.location, revision=source.revision)
            if not any(f.endswith(".safetensors") for f in files):
                raise InputError(f"{name}: {where} holds no .safetensors file.")
            filename, why = pick_file(files)
            _log_pick(source, files, filename, why)
        return Path(
            api.hf_hub_download(
                source.location, filename, revision=source.revision, local_dir=work / "hf"
            )
        )
    except GatedRepoError:
        raise InputError(
            f"{name}: {where} is gated: accept its terms on huggingface.co and set "
            "hf_api_token to a token of that account."
        ) from None
    except RepositoryNotFoundError:
        raise InputError(
            f"{name}: no repository {source.location} on Hugging Face, or it is "
            "private: check the name, or set hf_api_token."
        ) from None
    except RevisionNotFoundError:
        raise InputError(f"{name}: {source.location} has no revision {source.revision}.") from None
    except LocalEntryNotFoundError as err:  # no connection: before EntryNotFoundError
        raise InputError(f"{name}: could not reach Hugging Face for {where} ({err}).") from None
    except EntryNotFoundError:
        raise InputError(f"{name}: {source.location} has no file {source.filename}.") from None
    except HfHubHTTPError as err:
        code = getattr(err.response, "status_code", None)
        raise (
            _http_error(source, code) if code else InputError(f"{name}: {where}: {err}")
        ) from None
    except OSError as err:
        raise InputError(f"{name}: could not reach Hugging Face for {where} ({err}).") from None


def _log_pick(source: LoraSource, names: list[str], chosen: str, why: str) -> None:
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
        _log_pick(source, files, chosen, why)
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
    _log_pick(source, names, chosen, why)
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

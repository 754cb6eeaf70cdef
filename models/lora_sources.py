"""Where a LoRA comes from: every form `lora_weights` accepts, parsed and fetched.

Forms, read as cog-flux reads them where it has them:
- a local file or folder (a .safetensors, a .tar/.zip holding one, a folder holding one);
- `data:` URIs of any of those;
- `owner/model` or `owner/model/version` (also `replicate.com/...`): a Replicate model's
  trained weights (its `_weights` tar);
- `huggingface.co/owner/repo` (optionally `/tree/<rev>`), or a file in it:
  `huggingface.co/owner/repo/resolve/<rev>/file.safetensors` (or `/blob/`);
- CivitAI model pages `civitai.com/models/<id>[/name][?modelVersionId=<v>]` and download
  links `civitai.com/api/download/models/<v>`;
- any other http(s) URL (signed URLs with query strings too) to a .safetensors or an
  archive holding one. What a download holds is read from its bytes, not its name.

When several .safetensors are offered (a repo, an archive, a folder), `pick_file` chooses
by one documented rule and the choice is logged. Every failure is an InputError naming
the input and what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

from models.download import redact
from models.errors import InputError
from models.log import log
from models.lora_cache import LORA_FILE

# The largest published LoRAs (FLUX, rank 128 with text encoders) are about 1.3 GB; full
# checkpoints (SDXL 6.9 GB, FLUX 23 GB) are refused before they are downloaded.
MAX_LORA_BYTES = 4 * 2**30
# Files users most often name their LoRA; preferred when a repo or archive has several.
PREFERRED_NAMES = ("lora.safetensors", "pytorch_lora_weights.safetensors")
_NAME = r"[\w][\w.-]*"
_REPLICATE = re.compile(
    rf"^(?:https?://)?(?:replicate\.com/)?({_NAME})/({_NAME})(?:/(?:versions/)?(\w+))?/?$"
)
_HF_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")
_CIVITAI_HOSTS = ("civitai.com", "www.civitai.com")


@dataclass(frozen=True)
class Tokens:
    """Per-request secrets. Never logged: repr hides them."""

    huggingface: str | None = field(default=None, repr=False)
    civitai: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LoraSource:
    input_name: str  # the input that named it: errors say which
    kind: str  # path | data | url | huggingface | civitai | replicate
    location: str  # a path, URL, data URI, owner/repo, or CivitAI id
    revision: str | None = None  # HF revision, Replicate version, CivitAI version
    filename: str | None = None  # a file inside a Hugging Face repo

    def describe(self) -> str:
        """For logs: no payloads, and no query strings (signed URLs carry secrets)."""
        if self.kind == "data":
            return f"data: URI ({len(self.location) // 1024} KB)"
        if self.kind == "url":
            return redact(self.location)
        if self.kind == "huggingface":
            file = f"/{self.filename}" if self.filename else ""
            return f"huggingface.co/{self.location}@{self.revision}{file}"
        if self.kind == "civitai":
            version = f" version {self.revision}" if self.revision else " (latest version)"
            return (
                f"CivitAI model {self.location}{version}"
                if self.location
                else (f"CivitAI model version {self.revision}")
            )
        if self.kind == "replicate":
            return f"Replicate {self.location}" + (
                f" version {self.revision}" if self.revision else ""
            )
        return self.location

    def canonical(self) -> str:
        """What identifies the bytes, for the disk cache."""
        if self.kind == "data":
            return "data:" + hashlib.sha256(self.location.encode()).hexdigest()
        if self.kind == "path":
            path = Path(self.location).resolve()
            stat = path.stat()
            return f"path:{path}:{stat.st_size}:{stat.st_mtime_ns}"
        return f"{self.kind}:{self.location}@{self.revision}/{self.filename}"


def _refuse(input_name: str, value: str) -> InputError:
    return InputError(
        f"{input_name}={value!r} is not a LoRA source this model reads. Use one of: a "
        "Replicate model (owner/model or owner/model/version); huggingface.co/owner/repo "
        "or a .../resolve/main/file.safetensors link; a CivitAI page "
        "(civitai.com/models/123?modelVersionId=456) or download link; an https URL of a "
        ".safetensors file or a .tar/.zip holding one; a data: URI; or a local path."
    )


def parse_source(value: str, input_name: str) -> LoraSource:
    """Read what the user wrote; nothing is fetched yet."""
    value = value.strip()
    make = lambda kind, location, **kw: LoraSource(input_name, kind, location, **kw)  # noqa: E731
    if value.startswith("data:"):
        return make("data", value)
    if value.startswith("file://"):
        value = urlsplit(value).path
    if value.startswith(("/", "./", "../", "~")):
        return make("path", str(Path(value).expanduser()))
    bare = value if "://" in value else f"https://{value}"
    parts = urlsplit(bare)
    host = (parts.hostname or "").lower()
    if host in _HF_HOSTS:
        return _huggingface(parts.path, value, input_name)
    if host in _CIVITAI_HOSTS:
        return _civitai(parts.path, parts.query, value, input_name)
    if match := _REPLICATE.match(value):
        owner, model, version = match.groups()
        return make("replicate", f"{owner}/{model}", revision=version)
    if parts.scheme in ("http", "https") and "://" in value:
        return make("url", value)
    if Path(value).expanduser().exists():
        return make("path", str(Path(value).expanduser()))
    raise _refuse(input_name, value)


def _huggingface(path: str, value: str, input_name: str) -> LoraSource:
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2:
        raise _refuse(input_name, value)
    repo = "/".join(segments[:2])
    if len(segments) == 2:
        return LoraSource(input_name, "huggingface", repo, revision="main")
    if len(segments) >= 4 and segments[2] == "tree":
        return LoraSource(input_name, "huggingface", repo, revision=segments[3])
    if len(segments) >= 5 and segments[2] in ("resolve", "blob"):
        file = "/".join(segments[4:])
        return LoraSource(input_name, "huggingface", repo, revision=segments[3], filename=file)
    raise InputError(
        f"{input_name}={value!r}: a Hugging Face link must be huggingface.co/owner/repo or "
        "huggingface.co/owner/repo/resolve/<revision>/<file>.safetensors."
    )


def _civitai(path: str, query: str, value: str, input_name: str) -> LoraSource:
    if match := re.match(r"^/api/download/models/(\d+)/?$", path):
        return LoraSource(input_name, "civitai", "", revision=match.group(1))
    if match := re.match(r"^/models/(\d+)(?:/[^/]*)?/?$", path):
        version = parse_qs(query).get("modelVersionId", [None])[0]
        if version is not None and not version.isdigit():
            raise InputError(f"{input_name}={value!r}: modelVersionId must be a number.")
        return LoraSource(input_name, "civitai", match.group(1), revision=version)
    raise InputError(
        f"{input_name}={value!r}: a CivitAI link must be a model page "
        "(civitai.com/models/<id>, optionally with ?modelVersionId=<version>) or a download "
        "link (civitai.com/api/download/models/<version>)."
    )


def pick_file(names: list[str]) -> tuple[str, str]:
    """The .safetensors to use among several, and why: a preferred name (lora.safetensors,
    pytorch_lora_weights.safetensors) at the shallowest depth; otherwise the shallowest,
    then the shortest, then the alphabetically first path."""
    candidates = sorted(n for n in names if n.lower().endswith(".safetensors"))
    if len(candidates) == 1:
        return candidates[0], "the only .safetensors"

    def depth_length_name(name: str):
        return (name.count("/"), len(name), name)

    preferred = [n for n in candidates if PurePosixPath(n).name in PREFERRED_NAMES]
    if preferred:
        return min(preferred, key=depth_length_name), "its name marks it as the LoRA"
    return min(candidates, key=depth_length_name), "the shallowest, shortest name"


@dataclass(frozen=True)
class Hosts:
    """Where the well-known services answer (local stand-ins in tests)."""

    huggingface: str = "https://huggingface.co"
    civitai: str = "https://civitai.com"
    replicate: str = "https://replicate.com"


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
    from models.download import DownloadError, download_url

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

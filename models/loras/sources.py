"""Where a LoRA comes from: every form `lora_weights` accepts, read into a LoraSource
(fetching is models/loras/fetch.py).

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
  archive holding one.

When several .safetensors are offered (a repo, an archive, a folder), `pick_file` chooses
by one documented rule. A form that cannot be read is an InputError listing the forms.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlsplit

from models.errors import InputError
from models.weights.download import redact

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

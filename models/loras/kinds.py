"""Every form `lora_weights` accepts, one class per kind of source, read as cog-flux reads
them where it has them:
- `data:` URIs of a .safetensors or an archive holding one;
- `huggingface.co/owner/repo` (optionally `/tree/<rev>`), or a file in it:
  `huggingface.co/owner/repo/resolve/<rev>/file.safetensors` (or `/blob/`);
- CivitAI model pages `civitai.com/models/<id>[/name][?modelVersionId=<v>]` and download
  links `civitai.com/api/download/models/<v>`;
- `owner/model` or `owner/model/version` (also `replicate.com/...`): a Replicate model's
  trained weights (its `_weights` tar);
- any other http(s) URL (signed URLs with query strings too) to a .safetensors or an
  archive holding one;
- a local file or folder (a .safetensors, a .tar/.zip holding one, a folder holding one).

parse_source() tries the kinds in that order. A new kind is one class here, added to
KINDS, and its tests. A form no kind reads is an InputError listing the forms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from models.errors import InputError
from models.log import log
from models.loras.fetch import MAX_LORA_BYTES, download, http_error, log_pick
from models.loras.source import Hosts, LoraSource, Tokens, pick_file
from models.weights.download import redact

_NAME = r"[\w][\w.-]*"


class DataUri(LoraSource):
    kind = "data"

    @classmethod
    def parse(cls, value: str, input_name: str) -> DataUri | None:
        return cls(input_name, value) if value.startswith("data:") else None

    def describe(self) -> str:
        return f"data: URI ({len(self.location) // 1024} KB)"

    def canonical(self) -> str:
        return "data:" + hashlib.sha256(self.location.encode()).hexdigest()

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
        header, comma, payload = self.location.partition(",")
        name = self.input_name
        if not comma or ";base64" not in header:
            raise InputError(f"{name}: a data: URI must be base64 (data:...;base64,...).")
        if len(payload) * 3 // 4 > MAX_LORA_BYTES:
            raise InputError(f"{name}: the data: URI is larger than a LoRA can be.")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{name}: the data: URI is not valid base64.") from None
        (work / "data").write_bytes(data)
        return work / "data"


class HuggingFaceRepo(LoraSource):
    kind = "huggingface"
    token_input = "hf_api_token"
    hosts = ("huggingface.co", "hf.co", "www.huggingface.co")

    @classmethod
    def parse(cls, value: str, input_name: str) -> HuggingFaceRepo | None:
        parts = _url_parts(value)
        if (parts.hostname or "").lower() not in cls.hosts:
            return None
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 2:
            raise refuse(input_name, value)
        repo = "/".join(segments[:2])
        if len(segments) == 2:
            return cls(input_name, repo, revision="main")
        if len(segments) >= 4 and segments[2] == "tree":
            return cls(input_name, repo, revision=segments[3])
        if len(segments) >= 5 and segments[2] in ("resolve", "blob"):
            return cls(input_name, repo, revision=segments[3], filename="/".join(segments[4:]))
        raise InputError(
            f"{input_name}={value!r}: a Hugging Face link must be huggingface.co/owner/repo or "
            "huggingface.co/owner/repo/resolve/<revision>/<file>.safetensors."
        )

    def describe(self) -> str:
        file = f"/{self.filename}" if self.filename else ""
        return f"huggingface.co/{self.location}@{self.revision}{file}"

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
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
        where, name, repo = self.describe(), self.input_name, self.location
        try:
            filename = self.filename
            if filename is None:
                files = api.list_repo_files(repo, revision=self.revision)
                if not any(f.endswith(".safetensors") for f in files):
                    raise InputError(f"{name}: {where} holds no .safetensors file.")
                filename, why = pick_file(files)
                log_pick(self, files, filename, why)
            found = api.hf_hub_download(
                repo, filename, revision=self.revision, local_dir=work / "hf"
            )
            return Path(found)
        except GatedRepoError:
            raise InputError(
                f"{name}: {where} is gated: accept its terms on huggingface.co and set "
                "hf_api_token to a token of that account."
            ) from None
        except RepositoryNotFoundError:
            raise InputError(
                f"{name}: no repository {repo} on Hugging Face, or it is private: check the "
                "name, or set hf_api_token."
            ) from None
        except RevisionNotFoundError:
            raise InputError(f"{name}: {repo} has no revision {self.revision}.") from None
        except LocalEntryNotFoundError as err:  # no connection: before EntryNotFoundError
            raise InputError(f"{name}: could not reach Hugging Face for {where} ({err}).") from None
        except EntryNotFoundError:
            raise InputError(f"{name}: {repo} has no file {self.filename}.") from None
        except HfHubHTTPError as err:
            code = getattr(err.response, "status_code", None)
            raise (
                http_error(self, code) if code else InputError(f"{name}: {where}: {err}")
            ) from None
        except OSError as err:
            raise InputError(f"{name}: could not reach Hugging Face for {where} ({err}).") from None


class CivitAIModel(LoraSource):
    """A model page (location: the model id; revision: a version id, or None for the
    newest) or a download link (location empty; revision: its version id)."""

    kind = "civitai"
    token_input = "civitai_api_token"
    not_found_hint = (
        " A download link's number is a version id, not the page's model id: paste the "
        "model page URL (with ?modelVersionId= for a given version)."
    )
    hosts = ("civitai.com", "www.civitai.com")

    @classmethod
    def parse(cls, value: str, input_name: str) -> CivitAIModel | None:
        parts = _url_parts(value)
        if (parts.hostname or "").lower() not in cls.hosts:
            return None
        if match := re.match(r"^/api/download/models/(\d+)/?$", parts.path):
            return cls(input_name, "", revision=match.group(1))
        if match := re.match(r"^/models/(\d+)(?:/[^/]*)?/?$", parts.path):
            version = parse_qs(parts.query).get("modelVersionId", [None])[0]
            if version is not None and not version.isdigit():
                raise InputError(f"{input_name}={value!r}: modelVersionId must be a number.")
            return cls(input_name, match.group(1), revision=version)
        raise InputError(
            f"{input_name}={value!r}: a CivitAI link must be a model page "
            "(civitai.com/models/<id>, optionally with ?modelVersionId=<version>) or a download "
            "link (civitai.com/api/download/models/<version>)."
        )

    def describe(self) -> str:
        if not self.location:
            return f"CivitAI model version {self.revision}"
        version = f" version {self.revision}" if self.revision else " (latest version)"
        return f"CivitAI model {self.location}{version}"

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
        # A page without a version means its newest one, which the API names.
        version = self.revision or self._latest_version(tokens, hosts)
        headers = {"Authorization": f"Bearer {tokens.civitai}"} if tokens.civitai else {}
        url = f"{hosts.civitai}/api/download/models/{version}?type=Model&format=SafeTensor"
        return download(self, url, headers, work)

    def _latest_version(self, tokens: Tokens, hosts: Hosts) -> str:
        request = urllib.request.Request(f"{hosts.civitai}/api/v1/models/{self.location}")
        if tokens.civitai:
            request.add_header("Authorization", f"Bearer {tokens.civitai}")
        name, model_id = self.input_name, self.location
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                model = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise http_error(self, err.code) from None
        except (OSError, ValueError) as err:
            raise InputError(
                f"{name}: could not ask CivitAI about model {model_id} ({err}). Try again, "
                "or use its download link."
            ) from None
        kind = str(model.get("type", "")).lower()
        if kind and kind not in ("lora", "locon", "dora", "lycoris"):
            raise InputError(
                f"{name}: CivitAI model {model_id} is a {model['type']}, not a LoRA. Pick a "
                "LoRA model on CivitAI."
            )
        versions = model.get("modelVersions") or []
        if not versions:
            raise InputError(f"{name}: CivitAI model {model_id} has no versions.")
        version = str(versions[0]["id"])
        log.info(
            f"CivitAI model {model_id}: using its newest version {version} "
            f"({versions[0].get('name', '')!s}); add ?modelVersionId=N to pick another."
        )
        return version


class ReplicateModel(LoraSource):
    """A model trained on Replicate: its `_weights` (location: owner/model)."""

    kind = "replicate"
    not_found_hint = " It must be a model trained on Replicate with a LoRA trainer."
    pattern = re.compile(
        rf"^(?:https?://)?(?:replicate\.com/)?({_NAME})/({_NAME})(?:/(?:versions/)?(\w+))?/?$"
    )

    @classmethod
    def parse(cls, value: str, input_name: str) -> ReplicateModel | None:
        if match := cls.pattern.match(value):
            owner, model, version = match.groups()
            return cls(input_name, f"{owner}/{model}", revision=version)
        return None

    def describe(self) -> str:
        return f"Replicate {self.location}" + (f" version {self.revision}" if self.revision else "")

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
        version = f"/versions/{self.revision}" if self.revision else ""
        return download(self, f"{hosts.replicate}/{self.location}{version}/_weights", {}, work)


class WebFile(LoraSource):
    """Any other http(s) URL, signed ones with query strings too."""

    kind = "url"

    @classmethod
    def parse(cls, value: str, input_name: str) -> WebFile | None:
        scheme = urlsplit(value).scheme if "://" in value else ""
        return cls(input_name, value) if scheme in ("http", "https") else None

    def describe(self) -> str:
        return redact(self.location)

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
        return download(self, self.location, {}, work)


class LocalPath(LoraSource):
    """A file or folder on this machine (`file://` URLs too); never moved or changed."""

    kind = "path"

    @classmethod
    def parse(cls, value: str, input_name: str) -> LocalPath | None:
        if value.startswith("file://"):
            value = urlsplit(value).path
        explicit = value.startswith(("/", "./", "../", "~"))
        if explicit or Path(value).expanduser().exists():
            return cls(input_name, str(Path(value).expanduser()))
        return None

    def canonical(self) -> str:
        path = Path(self.location).resolve()
        stat = path.stat()
        return f"path:{path}:{stat.st_size}:{stat.st_mtime_ns}"

    def fetch(self, work: Path, tokens: Tokens, hosts: Hosts) -> Path:
        found = Path(self.location)
        if not found.exists():
            raise InputError(f"{self.input_name}: no such file or folder {found}.")
        return found


# Tried in this order: a host's own link before a generic URL, a path last (a relative
# path is taken only when it exists).
KINDS: tuple[type[LoraSource], ...] = (
    DataUri,
    HuggingFaceRepo,
    CivitAIModel,
    ReplicateModel,
    WebFile,
    LocalPath,
)


def parse_source(value: str, input_name: str) -> LoraSource:
    """Read what the user wrote; nothing is fetched yet."""
    value = value.strip()
    for kind in KINDS:
        source = kind.parse(value, input_name)
        if source is not None:
            return source
    raise refuse(input_name, value)


def refuse(input_name: str, value: str) -> InputError:
    return InputError(
        f"{input_name}={value!r} is not a LoRA source this model reads. Use one of: a "
        "Replicate model (owner/model or owner/model/version); huggingface.co/owner/repo "
        "or a .../resolve/main/file.safetensors link; a CivitAI page "
        "(civitai.com/models/123?modelVersionId=456) or download link; an https URL of a "
        ".safetensors file or a .tar/.zip holding one; a data: URI; or a local path."
    )


def _url_parts(value: str):
    return urlsplit(value if "://" in value else f"https://{value}")

"""What every LoRA source is: `LoraSource`, the base each kind derives from (models/loras/
kinds.py), the secrets and hosts a fetch may use, and the rule that picks one file among
several."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

# The name of a LoRA file we write (the disk cache, train.py's tar), the first of the
# names users most often give theirs, which are preferred when a repo or archive has several.
LORA_FILE = "lora.safetensors"
PREFERRED_NAMES = (LORA_FILE, "pytorch_lora_weights.safetensors")


@dataclass(frozen=True)
class Tokens:
    """Per-request secrets. Never logged: repr hides them."""

    huggingface: str | None = field(default=None, repr=False)
    civitai: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Hosts:
    """Where the well-known services answer: Settings' endpoints (local stand-ins in
    tests)."""

    huggingface: str
    civitai: str
    replicate: str


@dataclass(frozen=True)
class LoraSource:
    """Where one LoRA comes from, as the user wrote it (nothing fetched). A kind of source
    is a subclass: it reads the forms it accepts (parse), names itself for logs and the
    disk cache, and fetches its bytes (fetch)."""

    input_name: str  # the input that named it: errors say which
    location: str  # a path, URL, data URI, owner/repo, or CivitAI id
    revision: str | None = None  # HF revision, Replicate version, CivitAI version
    filename: str | None = None  # a file inside a Hugging Face repo

    kind: ClassVar[str] = ""  # for logs and the cache key
    # The input whose token may open what answers 401/403, and a 404's likely cause.
    token_input: ClassVar[str | None] = None
    not_found_hint: ClassVar[str] = ""

    @classmethod
    def parse(cls, value: str, input_name: str) -> LoraSource | None:
        """This kind's reading of `value`, None when it is not this kind; an InputError
        when it is, in a form this kind cannot read."""
        raise NotImplementedError

    def describe(self) -> str:
        """For logs: no payloads, and no query strings (signed URLs carry secrets)."""
        return self.location

    def canonical(self) -> str:
        """What identifies the bytes, for the disk cache."""
        return f"{self.kind}:{self.location}@{self.revision}/{self.filename}"

    def fetch(self, work: Path, tokens, hosts: Hosts) -> Path:
        """Fetch into the private folder `work`; return the file or folder fetched (an
        archive or a folder is unpacked and picked from by models/loras/fetch.py)."""
        raise NotImplementedError


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

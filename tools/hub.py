"""A local stand-in for the places weights and LoRAs come from: a plain file host, the
Hugging Face Hub API, CivitAI and Replicate's `_weights` endpoint. Tests and `script/bench`
fetch from it instead of the network; the real clients (urllib, huggingface_hub's
hf_hub_download and snapshot_download) talk to it as they would to the real services, with
the headers, checksums, ranges and error codes those send.

    with Hub() as hub:
        url = hub.add_file("lora.safetensors", data)
        hub.hf["owner/repo"] = HfRepo({"lora.safetensors": data}, token="hf_x")
        settings = replace(settings, **hub.endpoints())

`cut` makes a Hub file's answers stop early, as a dropped connection does, and `tampered`
serves other bytes than the ones its listing's checksum describes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")  # stored in git LFS: checksummed by sha256


@dataclass
class HfRepo:
    files: dict[str, bytes]
    token: str | None = None  # private: this token is needed
    gated: bool = False  # gated: any request without the token is refused as gated
    revision: str = "main"

    def commit(self) -> str:
        """Changes whenever a file does, as a git commit would."""
        listing = sorted((path, _git_sha1(data)) for path, data in self.files.items())
        return hashlib.sha1(json.dumps(listing).encode()).hexdigest()

    def tree(self) -> list[dict]:
        entries = []
        for path, data in sorted(self.files.items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": _git_sha1(data)}
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": _sha256(data), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


@dataclass
class CivitaiModel:
    kind: str  # "LORA", "Checkpoint"...
    versions: dict[int, bytes]  # newest first, as CivitAI's API lists them
    token: str | None = None


@dataclass
class Hub:
    files: dict[str, bytes] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    hf: dict[str, HfRepo] = field(default_factory=dict)
    civitai: dict[int, CivitaiModel] = field(default_factory=dict)
    replicate: dict[str, bytes] = field(default_factory=dict)  # "owner/model[/version]"
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    # Hub file path -> (how many answers to cut short, after how many bytes).
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    tampered: dict[str, bytes] = field(default_factory=dict)  # Hub file path -> bytes sent
    downloads: Counter = field(default_factory=Counter)  # Hub file path -> GET answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Hub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_file(self, path: str, data: bytes) -> str:
        self.files[path.lstrip("/")] = data
        return f"{self.url}/{path.lstrip('/')}"

    def add_status(self, path: str, status: int) -> str:
        self.statuses[path.lstrip("/")] = status
        return f"{self.url}/{path.lstrip('/')}"

    def endpoints(self) -> dict[str, str]:
        """Settings fields that point the clients here."""
        return {
            "hf_endpoint": f"{self.url}/hf",
            "civitai_endpoint": f"{self.url}/civitai",
            "replicate_endpoint": f"{self.url}/replicate",
        }

    def env(self) -> dict[str, str]:
        """The same as environment variables, for a server subprocess."""
        names = {"hf_endpoint": "HF_ENDPOINT", "civitai_endpoint": "CIVITAI_ENDPOINT"}
        names["replicate_endpoint"] = "REPLICATE_WEB_ENDPOINT"
        return {names[k]: v for k, v in self.endpoints().items()}

    def count(self, fragment: str) -> int:
        """Requests whose path contains `fragment` (e.g. to prove a cache hit fetched nothing)."""
        return sum(1 for _, path, _ in self.requests if fragment in path)


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # 8 connections at once overflow the default 5: 1 s SYN retries
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path.lstrip("/"), parse_qs(parts.query)
        self.hub.requests.append((self.command, path, dict(self.headers)))
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or None
        if path in self.hub.statuses:
            return self._send(self.hub.statuses[path], b"", head)
        if path in self.hub.files:
            return self._send(200, self.hub.files[path], head)
        service, _, rest = path.partition("/")
        route = {"hf": self._hf, "civitai": self._civitai, "replicate": self._replicate}
        if service in route:
            return route[service](rest, query, token, head)
        self._send(404, b"not found", head)

    def _send(
        self, status: int, body: bytes, head: bool, headers: dict | None = None, cut=None
    ) -> None:
        """`cut`: stop after that many bytes of the body and drop the connection."""
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body if cut is None else body[:cut])
        self.close_connection = self.close_connection or cut is not None

    def _json(self, data, head: bool) -> None:
        self._send(200, json.dumps(data).encode(), head, {"Content-Type": "application/json"})

    def _hf(self, rest: str, query, token, head: bool) -> None:
        # api/models/<owner>/<repo>[/revision/<rev>], api/models/<owner>/<repo>/tree/<rev>
        # and <owner>/<repo>/resolve/<rev>/<file>; <rev> is a branch or the commit.
        api = rest.startswith("api/models/")
        segments = [unquote(s) for s in rest.removeprefix("api/models/").split("/")]
        repo_id = "/".join(segments[:2])
        repo = self.hub.hf.get(repo_id)
        if repo is None or (repo.token and token != repo.token and not repo.gated):
            return self._send(401, b"", head, {"X-Error-Code": "RepoNotFound"})
        if repo.gated and token != repo.token:
            return self._send(403, b"", head, {"X-Error-Code": "GatedRepo"})
        if api and len(segments) == 2:
            segments += ["revision", repo.revision]
        kind, revision = segments[2:4] if len(segments) >= 4 else ("", "")
        if revision not in (repo.revision, repo.commit()):
            return self._send(404, b"", head, {"X-Error-Code": "RevisionNotFound"})
        if api and kind == "revision":
            siblings = [{"rfilename": path} for path in sorted(repo.files)]
            return self._json({"id": repo_id, "sha": repo.commit(), "siblings": siblings}, head)
        if api and kind == "tree":
            return self._json(repo.tree(), head)
        name = "/".join(segments[4:])
        if api or kind != "resolve" or name not in repo.files:
            return self._send(404, b"", head, {"X-Error-Code": "EntryNotFound"})
        self._hf_file(repo, name, head)

    def _hf_file(self, repo: HfRepo, name: str, head: bool) -> None:
        real = repo.files[name]
        data = self.hub.tampered.get(name, real)
        headers = {"X-Repo-Commit": repo.commit(), "ETag": f'"{_git_sha1(real)}"'}
        if name.endswith(LFS_SUFFIXES):
            headers |= {"X-Linked-Etag": f'"{_sha256(real)}"', "X-Linked-Size": str(len(data))}
        headers["Accept-Ranges"] = "bytes"
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match[1]) if match else 0
        if match:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        times = after = 0
        if not head:
            with self.hub.lock:
                self.hub.downloads[name] += 1
                times, after = self.hub.cut.get(name, (0, 0))
                if times:
                    self.hub.cut[name] = (times - 1, after)
        self._send(206 if match else 200, data[start:], head, headers, after if times else None)

    def _civitai(self, rest: str, query, token, head: bool) -> None:
        segments = rest.split("/")
        if segments[:3] == ["api", "v1", "models"] and len(segments) == 4:
            model = self.hub.civitai.get(int(segments[3]))
            if model is None:
                return self._send(404, b"", head)
            versions = [{"id": v, "name": f"v{v}"} for v in model.versions]
            return self._json({"type": model.kind, "modelVersions": versions}, head)
        if segments[:3] == ["api", "download", "models"] and len(segments) == 4:
            version = int(segments[3])
            for model in self.hub.civitai.values():
                if version in model.versions:
                    if model.token and token != model.token:
                        return self._send(401, b"", head)
                    # CivitAI redirects to signed storage on another host ("localhost"
                    # is another host to a client that asked 127.0.0.1).
                    stored = f"storage/{version}/model.safetensors"
                    self.hub.files[stored] = model.versions[version]
                    port = self.server.server_address[1]
                    location = f"http://localhost:{port}/{stored}?sig=x"
                    return self._send(302, b"", head, {"Location": location})
        self._send(404, b"", head)

    def _replicate(self, rest: str, query, token, head: bool) -> None:
        segments = rest.split("/")
        if segments[-1] != "_weights":
            return self._send(404, b"", head)
        key = "/".join(s for s in segments[:-1] if s != "versions")
        if key not in self.hub.replicate:
            return self._send(404, b"", head)
        self._send(200, self.hub.replicate[key], head)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

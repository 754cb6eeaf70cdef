"""A local stand-in for the places LoRAs come from: a plain file host, the Hugging Face
Hub API, CivitAI and Replicate's `_weights` endpoint. Tests and `script/bench` fetch from
it instead of the network; the real clients (urllib, huggingface_hub) talk to it as they
would to the real services, with the headers and error codes those send.

    with Hub() as hub:
        url = hub.add_file("lora.safetensors", data)
        hub.add_hf_repo("owner/repo", {"lora.safetensors": data}, token="hf_x")
        settings = replace(settings, **hub.endpoints())
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class HfRepo:
    files: dict[str, bytes]
    token: str | None = None  # private: this token is needed
    gated: bool = False  # gated: any request without the token is refused as gated
    revision: str = "main"


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

    def __enter__(self) -> Hub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
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

    def _send(self, status: int, body: bytes, head: bool, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data, head: bool) -> None:
        self._send(200, json.dumps(data).encode(), head, {"Content-Type": "application/json"})

    def _hf(self, rest: str, query, token, head: bool) -> None:
        # /api/models/<owner>/<repo>/tree/<rev>  and  /<owner>/<repo>/resolve/<rev>/<file>
        api = rest.startswith("api/models/")
        segments = rest.removeprefix("api/models/").split("/")
        repo_id = "/".join(segments[:2])
        repo = self.hub.hf.get(repo_id)
        if repo is None or (repo.token and token != repo.token and not repo.gated):
            return self._send(401, b"", head, {"X-Error-Code": "RepoNotFound"})
        if repo.gated and token != repo.token:
            return self._send(403, b"", head, {"X-Error-Code": "GatedRepo"})
        kind, revision = segments[2:4] if len(segments) >= 4 else ("", "")
        if revision != repo.revision:
            return self._send(404, b"", head, {"X-Error-Code": "RevisionNotFound"})
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        if api and kind == "tree":
            listing = [
                {"type": "file", "path": name, "size": len(data), "oid": _etag(data)}
                for name, data in sorted(repo.files.items())
            ]
            return self._json(listing, head)
        name = "/".join(segments[4:])
        if kind != "resolve" or name not in repo.files:
            return self._send(404, b"", head, {"X-Error-Code": "EntryNotFound"})
        data = repo.files[name]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{_etag(data)}"'}
        self._send(200, data, head, headers)

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


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

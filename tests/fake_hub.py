"""A local stand-in for the Hugging Face Hub: the few endpoints huggingface_hub's
snapshot_download uses (repo info, recursive tree, resolve with ranges), serving
in-memory repos. Tests point Settings.hf_endpoint at it; nothing reaches the network.

`cut` makes a file's answers stop early, as a dropped connection does: path -> how many
answers to cut, after how many bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from tests.files_server import HTTPServer

LFS_SUFFIXES = (".safetensors", ".bin")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Hub:
    url: str = ""
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    # path -> bytes served in place of the real ones (the tree keeps the real checksums).
    tampered: dict[str, bytes] = field(default_factory=dict)
    downloads: Counter = field(default_factory=Counter)  # path -> GET answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    def commit(self, repo: str) -> str:
        listing = sorted((path, git_sha1(data)) for path, data in self.repos[repo].items())
        return hashlib.sha1(json.dumps(listing).encode()).hexdigest()

    def tree(self, repo: str) -> list[dict]:
        entries = []
        for path, data in sorted(self.repos[repo].items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
            if path.endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, payload) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _missing(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        self._answer(head=False)

    def do_HEAD(self):
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        hub: Hub = self.server.hub
        path = unquote(urlsplit(self.path).path)
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(/.*)?)?", path)
        if api:
            repo, kind = api[1], api[2] or "revision"
            if repo not in hub.repos:
                return self._missing()
            if kind == "revision":
                siblings = [{"rfilename": p} for p in sorted(hub.repos[repo])]
                return self._json({"id": repo, "sha": hub.commit(repo), "siblings": siblings})
            return self._json(hub.tree(repo))
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if not resolve or resolve[3] not in hub.repos.get(resolve[1], {}):
            return self._missing()
        repo, file = resolve[1], resolve[3]
        data = hub.tampered.get(file, hub.repos[repo][file])
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
        body = data[start:]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", hub.commit(repo))
        real = hub.repos[repo][file]
        self.send_header("ETag", f'"{git_sha1(real)}"')
        if file.endswith(LFS_SUFFIXES):
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(real).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        with hub.lock:
            hub.downloads[file] += 1
            times, after = hub.cut.get(file, (0, 0))
            if times:
                hub.cut[file] = (times - 1, after)
        if times:
            self.wfile.write(body[:after])
            self.close_connection = True
            return
        self.wfile.write(body)


def start() -> tuple[Hub, HTTPServer]:
    httpd = HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.hub = Hub(url=f"http://127.0.0.1:{httpd.server_port}")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd.hub, httpd

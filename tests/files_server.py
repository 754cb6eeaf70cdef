"""Local HTTP servers for download tests: files in memory, with ranges, ETags, cut
connections and tokens, as CDNs behave; and the helpers that build what they serve."""

from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from safetensors.torch import save


@dataclass
class Server:
    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    # Cut the first `cut_first` range answers longer than `cut_after` bytes after
    # `cut_after` bytes, having promised the full Content-Length.
    cut_after: int | None = None
    cut_first: int = 0
    cuts: int = 0
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    etags: bool = True  # send a strong ETag and honour If-Range
    # Replace the file at this path by these bytes once this many range answers were sent.
    swap: tuple[str, int, bytes] | None = None
    requests: Counter = field(default_factory=Counter)
    range_requests: Counter = field(default_factory=Counter)
    served: Counter = field(default_factory=Counter)
    auth_by_host: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        st: Server = self.server.state
        path, auth = self.path, self.headers.get("Authorization")
        with st.lock:
            st.requests[path] += 1
            st.auth_by_host.append((self.headers["Host"], auth))
        if path.startswith("/redirect/"):
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/{path.split('/', 2)[2]}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if st.token and auth != f"Bearer {st.token}":
            self.send_error(401)
            return
        body = st.files.get(path)
        if body is None:
            self.send_error(404)
            return
        with st.lock:
            if st.swap and st.swap[0] == path and st.range_requests[path] >= st.swap[1]:
                body = st.files[path] = st.swap[2]
                st.swap = None
        etag = f'"{hashlib.sha1(body).hexdigest()}"'
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if st.etags and if_range is not None and if_range != etag:
            match = None  # changed since: the whole new file, as RFC 9110 says
        cut = False
        if st.ranges and match:
            start = int(match[1])
            end = min(int(match[2] or len(body) - 1), len(body) - 1)
            if start >= len(body):
                self.send_error(416)
                return
            part = body[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            with st.lock:
                st.range_requests[path] += 1
                cut = st.cut_after is not None and len(part) > st.cut_after
                cut = cut and st.cuts < st.cut_first
                st.cuts += cut
        else:
            part = body
            self.send_response(200)
        if st.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if st.etags:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if head:
            return
        if cut:
            time.sleep(0.05)  # a slow failure, so the other connections get going first
            part = part[: st.cut_after]
        self.wfile.write(part)  # HTTP/1.0: the connection closes after each answer
        with st.lock:
            st.served[path] += len(part)


class HTTPServer(ThreadingHTTPServer):
    request_queue_size = 64  # 8 connections at once overflow the default 5: 1 s SYN retries
    daemon_threads = True


def start() -> tuple[Server, HTTPServer]:
    state = Server()
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    return state, httpd


def payload(size: int = 300_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def make_tar(
    members: dict[str, bytes], mode: str = "w", links: dict[str, str] | None = None
) -> bytes:
    """A tar of `members` (name -> bytes), plus symlinks (name -> where it points)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, points_to in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, points_to
            tar.addfile(info)
    return buf.getvalue()


def safetensors_file(size: int = 1000, seed: int = 0) -> bytes:
    """A valid .safetensors file holding `size` random float32 values."""
    generator = torch.Generator().manual_seed(seed)
    return save({"weight": torch.randn(size, generator=generator)})


def diffusers_folder(prefix: str = "", seed: int = 0, size: int = 1000) -> dict[str, bytes]:
    """The files of a minimal diffusers folder: one model component and a scheduler."""
    index = b'{"_class_name": "X", "unet": ["diffusers", "U"], "scheduler": ["diffusers", "S"]}'
    return {
        f"{prefix}model_index.json": index,
        f"{prefix}unet/config.json": b"{}",
        f"{prefix}unet/diffusion_pytorch_model.safetensors": safetensors_file(size, seed),
        f"{prefix}scheduler/scheduler_config.json": b"{}",
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

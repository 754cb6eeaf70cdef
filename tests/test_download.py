"""models/download.py against a local HTTP server that serves in-memory payloads."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models.download import DownloadError, download_url
from tests.conftest import tar_bytes
from tools.server import free_port

CHUNK = 32 * 2**10


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
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
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


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    monkeypatch.setenv("no_proxy", "*")


class HTTPServer(ThreadingHTTPServer):
    request_queue_size = 64  # 8 connections at once overflow the default 5: 1 s SYN retries


@pytest.fixture
def server():
    state = Server()
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def payload(size: int = 300_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def fetch(server: Server, path: str, dest, **kwargs):
    kwargs.setdefault("chunk_size", CHUNK)
    kwargs.setdefault("timeout", 5.0)
    return download_url(server.url(path), dest, **kwargs)


def staging(dest):
    return dest.parent / f".{dest.name}.partial"


def test_ranged_parallel_download(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="models")
    data = payload()
    server.files["/model.bin"] = data
    dest = tmp_path / "w"
    assert fetch(server, "/model.bin", dest, connections=4) == dest
    assert (dest / "model.bin").read_bytes() == data
    assert [p.name for p in dest.iterdir()] == ["model.bin"]
    assert server.range_requests["/model.bin"] > 1
    # Each byte was fetched once, plus the one-byte probe at most.
    assert len(data) <= server.served["/model.bin"] <= len(data) + 1
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no staging or temp folders left
    assert any("MB/s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "mode"), [("w.tar", "w"), ("w.tar.gz", "w:gz"), ("w.tgz", "w:gz")]
)
def test_tar_is_extracted(server, tmp_path, name, mode):
    members = {
        "model_index.json": b'{"_class_name": "FluxPipeline"}',
        "transformer/config.json": b"{}",
        "transformer/nested/weights.safetensors": payload(200_000, seed=1),
    }
    server.files[f"/{name}"] = tar_bytes(members, mode)
    dest = tmp_path / "w"
    fetch(server, f"/{name}", dest)
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert found == members
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_interrupted_download_resumes(server, tmp_path):
    data = payload()
    server.files["/model.bin"] = data
    server.cut_after, server.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="interrupted") as err:
        fetch(server, "/model.bin", dest, connections=4)
    assert server.url("/model.bin") in str(err.value)
    assert "again" in str(err.value)
    assert not dest.exists()
    state = json.loads((staging(dest) / "state.json").read_text())
    assert state["done"], "chunks in flight should have been kept"

    served_before = server.served["/model.bin"]
    fetch(server, "/model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == data
    assert server.served["/model.bin"] - served_before < len(data)
    assert not staging(dest).exists()


def test_changed_source_starts_over(server, tmp_path):
    server.files["/model.bin"] = payload()
    server.cut_after, server.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError):
        fetch(server, "/model.bin", dest, connections=4)
    # Same URL, now a different size: the old chunks must not be reused.
    new = payload(310_000, seed=2)
    server.files["/model.bin"] = new
    fetch(server, "/model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == new


def test_checksum(server, tmp_path):
    data = payload()
    server.files["/model.bin"] = data
    dest = tmp_path / "w"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        fetch(server, "/model.bin", dest, sha256=wrong)
    message = str(err.value)
    assert wrong in message and hashlib.sha256(data).hexdigest() in message
    assert server.url("/model.bin") in message
    assert not dest.exists() and not staging(dest).exists()

    fetch(server, "/model.bin", dest, sha256=hashlib.sha256(data).hexdigest())
    assert (dest / "model.bin").read_bytes() == data


def test_404(server, tmp_path):
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(server, "/missing.tar", dest)
    assert server.url("/missing.tar") in str(err.value)
    assert not dest.exists()


def test_token_is_sent_and_its_absence_explained(server, tmp_path):
    server.token = "secret"
    server.files["/model.bin"] = payload()
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="HF_TOKEN"):
        fetch(server, "/model.bin", dest)
    assert not dest.exists()

    server.auth_by_host.clear()
    fetch(server, "/model.bin", dest, headers={"Authorization": "Bearer secret"})
    assert (dest / "model.bin").read_bytes() == server.files["/model.bin"]
    assert len(server.auth_by_host) > 2
    assert {auth for _, auth in server.auth_by_host} == {"Bearer secret"}


def test_token_is_not_sent_to_another_host(server, tmp_path):
    data = payload()
    server.files["/model.bin"] = data
    dest = tmp_path / "w"
    fetch(server, "/redirect/model.bin", dest, headers={"Authorization": "Bearer secret"})
    assert (dest / "model.bin").read_bytes() == data
    sent = {(host.split(":")[0], auth) for host, auth in server.auth_by_host}
    assert sent == {("127.0.0.1", "Bearer secret"), ("localhost", None)}


def test_server_without_ranges(server, tmp_path):
    data = payload()
    server.files["/model.bin"] = data
    server.ranges = False
    dest = tmp_path / "w"
    fetch(server, "/model.bin", dest)
    assert (dest / "model.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_empty_file(server, tmp_path):
    server.files["/empty.txt"] = b""
    dest = tmp_path / "w"
    fetch(server, "/empty.txt", dest)
    assert (dest / "empty.txt").read_bytes() == b""


def test_unreachable_host(tmp_path):
    port = free_port()  # a port nothing listens on
    dest = tmp_path / "w"
    url = f"http://127.0.0.1:{port}/model.tar"
    with pytest.raises(DownloadError, match="Could not reach") as err:
        download_url(url, dest, timeout=5.0)
    assert url in str(err.value) and "by hand" in str(err.value)
    assert "network" in str(err.value)
    assert not dest.exists()


def test_unsafe_tar_member_is_refused(server, tmp_path):
    server.files["/evil.tar"] = tar_bytes({"ok.txt": b"fine", "../escaped.txt": b"gotcha"})
    dest = tmp_path / "sub" / "w"
    with pytest.raises(DownloadError, match="unsafe"):
        fetch(server, "/evil.tar", dest)
    assert not dest.exists()
    assert not (tmp_path / "sub" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_existing_dest_is_left_alone(server, tmp_path):
    server.files["/model.bin"] = payload()
    dest = tmp_path / "w"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DownloadError, match="exists"):
        fetch(server, "/model.bin", dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert server.requests["/model.bin"] == 0

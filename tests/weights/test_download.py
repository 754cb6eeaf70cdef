"""models/weights/download.py against a local HTTP server that serves in-memory payloads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile

import pytest

from models.weights.download import DownloadError, download_url
from tests.files_server import Server, make_tar, payload
from tools.server import free_port

CHUNK = 32 * 2**10


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
    server.files[f"/{name}"] = make_tar(members, mode)
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
    server.files["/evil.tar"] = make_tar({"ok.txt": b"fine", "../escaped.txt": b"gotcha"})
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


def test_interruption_keeps_what_was_fetched_and_says_so(server, tmp_path):
    server.files["/model.bin"] = payload()
    server.cut_after, server.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError) as err:
        fetch(server, "/model.bin", dest, connections=4)
    assert err.value.resumable
    assert "kept in" in str(err.value) and "resumes it" in str(err.value)
    assert staging(dest).is_dir()


def test_same_size_new_etag_starts_over_instead_of_stitching(server, tmp_path):
    old, new = payload(seed=1), payload(seed=2)  # same size, different bytes
    server.files["/model.bin"] = old
    server.cut_after, server.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(server, "/model.bin", dest, connections=4)
    server.files["/model.bin"] = new
    served_before = server.served["/model.bin"]
    fetch(server, "/model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == new
    assert server.served["/model.bin"] - served_before >= len(new)  # all of it again


def test_a_file_replaced_during_the_download_is_refused(server, tmp_path):
    old, new = payload(seed=1), payload(seed=2)
    server.files["/model.bin"] = old
    server.swap = ("/model.bin", 3, new)  # re-uploaded after the third range answer
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="changed on the server") as err:
        fetch(server, "/model.bin", dest, connections=2)
    assert not err.value.resumable
    assert not dest.exists() and not staging(dest).exists()
    fetch(server, "/model.bin", dest, connections=2)
    assert (dest / "model.bin").read_bytes() == new


def test_without_etags_resume_still_checks_size(server, tmp_path):
    server.etags = False
    data = payload()
    server.files["/model.bin"] = data
    server.cut_after, server.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError):
        fetch(server, "/model.bin", dest, connections=4)
    fetch(server, "/model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == data


def test_sha256_is_logged_when_there_is_none_to_check(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="models")
    data = payload()
    server.files["/model.bin"] = data
    fetch(server, "/model.bin", tmp_path / "w")
    assert hashlib.sha256(data).hexdigest() in caplog.text


def big_tar_members(count=6, size=600_000) -> dict[str, bytes]:
    return {f"part-{i}.safetensors": payload(size, seed=i) for i in range(count)}


def test_an_interrupted_extraction_resumes_without_downloading_again(server, tmp_path, monkeypatch):
    members = big_tar_members()
    server.files["/w.tar"] = make_tar(members)
    dest = tmp_path / "w"
    real_extract = tarfile.TarFile.extract
    extracted = []

    def killed_after_two(self, member, *args, **kwargs):
        if len(extracted) == 2:
            raise KeyboardInterrupt  # the process stopped here
        extracted.append(member.name)
        return real_extract(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        fetch(server, "/w.tar", dest)
    monkeypatch.setattr(tarfile.TarFile, "extract", real_extract)
    served = server.served["/w.tar"]
    fetch(server, "/w.tar", dest)
    assert server.served["/w.tar"] == served  # nothing fetched again
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == members
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_a_tar_never_needs_twice_its_size_on_disk(tmp_path, monkeypatch):
    from models.weights import unpack

    members = big_tar_members()
    archive = tmp_path / "w.tar"
    archive.write_bytes(make_tar(members))
    into = tmp_path / "out"
    peaks = []
    real_release = unpack.release

    def measured(fd, start, end):
        freed = real_release(fd, start, end)
        on_disk = os.stat(archive).st_blocks * 512
        on_disk += sum(p.stat().st_size for p in into.rglob("*") if p.is_file())
        peaks.append(on_disk)
        return freed

    monkeypatch.setattr(unpack, "release", measured)
    unpack.unpack(archive, "w.tar", into, tmp_path / "progress.json")
    total = sum(len(data) for data in members.values())
    member = max(len(data) for data in members.values())
    assert {p.name: p.read_bytes() for p in into.iterdir()} == members
    assert len(peaks) == len(members)
    assert max(peaks) < total + 2 * member  # not 2 x total
    assert os.stat(archive).st_blocks * 512 < member  # the archive's space is given back

"""models/weights/download.py against the local file host (tools/fixtures/hub.py), which
serves in-memory payloads as a CDN does."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tarfile

import pytest

from models.weights.download import DownloadError, download_url
from tools.fixtures.hub import Hub
from tools.fixtures.payloads import make_tar, payload
from tools.server import free_port

CHUNK = 32 * 2**10


def fetch(hub: Hub, path: str, dest, **kwargs):
    kwargs.setdefault("chunk_size", CHUNK)
    kwargs.setdefault("timeout", 5.0)
    return download_url(hub.file_url(path), dest, **kwargs)


def auth_by_host(hub: Hub) -> list[tuple[str, str | None]]:
    """(Host, Authorization) of each request the hub received."""
    return [(headers["Host"], headers.get("Authorization")) for _, _, headers in hub.requests]


def staging(dest):
    return dest.parent / f".{dest.name}.partial"


def test_ranged_parallel_download(hub, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="models")
    data = payload()
    hub.files["model.bin"] = data
    dest = tmp_path / "w"
    assert fetch(hub, "model.bin", dest, connections=4) == dest
    assert (dest / "model.bin").read_bytes() == data
    assert [p.name for p in dest.iterdir()] == ["model.bin"]
    assert hub.range_requests["model.bin"] > 1
    # Each byte was fetched once, plus the one-byte probe at most.
    assert len(data) <= hub.served["model.bin"] <= len(data) + 1
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no staging or temp folders left
    assert any("MB/s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("name", "mode"), [("w.tar", "w"), ("w.tar.gz", "w:gz"), ("w.tgz", "w:gz")]
)
def test_tar_is_extracted(hub, tmp_path, name, mode):
    members = {
        "model_index.json": b'{"_class_name": "FluxPipeline"}',
        "transformer/config.json": b"{}",
        "transformer/nested/weights.safetensors": payload(200_000, seed=1),
    }
    hub.files[name] = make_tar(members, mode)
    dest = tmp_path / "w"
    fetch(hub, name, dest)
    found = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert found == members
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_interrupted_download_resumes(hub, tmp_path):
    data = payload()
    hub.files["model.bin"] = data
    hub.cut_after, hub.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="interrupted") as err:
        fetch(hub, "model.bin", dest, connections=4)
    assert hub.file_url("model.bin") in str(err.value)
    assert "again" in str(err.value)
    assert not dest.exists()
    state = json.loads((staging(dest) / "state.json").read_text())
    assert state["done"], "chunks in flight should have been kept"

    served_before = hub.served["model.bin"]
    fetch(hub, "model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == data
    assert hub.served["model.bin"] - served_before < len(data)
    assert not staging(dest).exists()


def test_changed_source_starts_over(hub, tmp_path):
    hub.files["model.bin"] = payload()
    hub.cut_after, hub.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError):
        fetch(hub, "model.bin", dest, connections=4)
    # Same URL, now a different size: the old chunks must not be reused.
    new = payload(310_000, seed=2)
    hub.files["model.bin"] = new
    fetch(hub, "model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == new


def test_checksum(hub, tmp_path):
    data = payload()
    hub.files["model.bin"] = data
    dest = tmp_path / "w"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(DownloadError, match="sha256 mismatch") as err:
        fetch(hub, "model.bin", dest, sha256=wrong)
    message = str(err.value)
    assert wrong in message and hashlib.sha256(data).hexdigest() in message
    assert hub.file_url("model.bin") in message
    assert not dest.exists() and not staging(dest).exists()

    fetch(hub, "model.bin", dest, sha256=hashlib.sha256(data).hexdigest())
    assert (dest / "model.bin").read_bytes() == data


def test_404(hub, tmp_path):
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        fetch(hub, "missing.tar", dest)
    assert hub.file_url("missing.tar") in str(err.value)
    assert not dest.exists()


def test_token_is_sent_and_its_absence_explained(hub, tmp_path):
    hub.token = "secret"
    hub.files["model.bin"] = payload()
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="HF_TOKEN"):
        fetch(hub, "model.bin", dest)
    assert not dest.exists()

    hub.requests.clear()
    fetch(hub, "model.bin", dest, headers={"Authorization": "Bearer secret"})
    assert (dest / "model.bin").read_bytes() == hub.files["model.bin"]
    assert len(auth_by_host(hub)) > 2
    assert {auth for _, auth in auth_by_host(hub)} == {"Bearer secret"}


def test_token_is_not_sent_to_another_host(hub, tmp_path):
    data = payload()
    hub.files["model.bin"] = data
    dest = tmp_path / "w"
    fetch(hub, "redirect/model.bin", dest, headers={"Authorization": "Bearer secret"})
    assert (dest / "model.bin").read_bytes() == data
    sent = {(host.split(":")[0], auth) for host, auth in auth_by_host(hub)}
    assert sent == {("127.0.0.1", "Bearer secret"), ("localhost", None)}


def test_server_without_ranges(hub, tmp_path):
    data = payload()
    hub.files["model.bin"] = data
    hub.ranges = False
    dest = tmp_path / "w"
    fetch(hub, "model.bin", dest)
    assert (dest / "model.bin").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["w"]


def test_empty_file(hub, tmp_path):
    hub.files["empty.txt"] = b""
    dest = tmp_path / "w"
    fetch(hub, "empty.txt", dest)
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


def test_unsafe_tar_member_is_refused(hub, tmp_path):
    hub.files["evil.tar"] = make_tar({"ok.txt": b"fine", "../escaped.txt": b"gotcha"})
    dest = tmp_path / "sub" / "w"
    with pytest.raises(DownloadError, match="unsafe"):
        fetch(hub, "evil.tar", dest)
    assert not dest.exists()
    assert not (tmp_path / "sub" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "sub").iterdir()) == []


def test_existing_dest_is_left_alone(hub, tmp_path):
    hub.files["model.bin"] = payload()
    dest = tmp_path / "w"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DownloadError, match="exists"):
        fetch(hub, "model.bin", dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert hub.count("model.bin") == 0


def test_interruption_keeps_what_was_fetched_and_says_so(hub, tmp_path):
    hub.files["model.bin"] = payload()
    hub.cut_after, hub.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError) as err:
        fetch(hub, "model.bin", dest, connections=4)
    assert err.value.resumable
    assert "kept in" in str(err.value) and "resumes it" in str(err.value)
    assert staging(dest).is_dir()


def test_same_size_new_etag_starts_over_instead_of_stitching(hub, tmp_path):
    old, new = payload(seed=1), payload(seed=2)  # same size, different bytes
    hub.files["model.bin"] = old
    hub.cut_after, hub.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="interrupted"):
        fetch(hub, "model.bin", dest, connections=4)
    hub.files["model.bin"] = new
    served_before = hub.served["model.bin"]
    fetch(hub, "model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == new
    assert hub.served["model.bin"] - served_before >= len(new)  # all of it again


def test_a_file_replaced_during_the_download_is_refused(hub, tmp_path):
    old, new = payload(seed=1), payload(seed=2)
    hub.files["model.bin"] = old
    hub.swap = ("model.bin", 3, new)  # re-uploaded after the third range answer
    dest = tmp_path / "w"
    with pytest.raises(DownloadError, match="changed on the server") as err:
        fetch(hub, "model.bin", dest, connections=2)
    assert not err.value.resumable
    assert not dest.exists() and not staging(dest).exists()
    fetch(hub, "model.bin", dest, connections=2)
    assert (dest / "model.bin").read_bytes() == new


def test_without_etags_resume_still_checks_size(hub, tmp_path):
    hub.etags = False
    data = payload()
    hub.files["model.bin"] = data
    hub.cut_after, hub.cut_first = 1000, 2
    dest = tmp_path / "w"
    with pytest.raises(DownloadError):
        fetch(hub, "model.bin", dest, connections=4)
    fetch(hub, "model.bin", dest, connections=4)
    assert (dest / "model.bin").read_bytes() == data


def test_sha256_is_logged_when_there_is_none_to_check(hub, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="models")
    data = payload()
    hub.files["model.bin"] = data
    fetch(hub, "model.bin", tmp_path / "w")
    assert hashlib.sha256(data).hexdigest() in caplog.text


def big_tar_members(count=6, size=600_000) -> dict[str, bytes]:
    return {f"part-{i}.safetensors": payload(size, seed=i) for i in range(count)}


def test_an_interrupted_extraction_resumes_without_downloading_again(hub, tmp_path, monkeypatch):
    members = big_tar_members()
    hub.files["w.tar"] = make_tar(members)
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
        fetch(hub, "w.tar", dest)
    monkeypatch.setattr(tarfile.TarFile, "extract", real_extract)
    served = hub.served["w.tar"]
    fetch(hub, "w.tar", dest)
    assert hub.served["w.tar"] == served  # nothing fetched again
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

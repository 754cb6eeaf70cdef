"""models/resolver.py: local folder first, then build or download, else a clear error."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from dataclasses import replace

import pytest

from models import manifest, resolver, tiny
from models.errors import WeightsError
from models.manifest import Source, WeightsEntry
from tools.server import free_port


@pytest.fixture
def weights_settings(settings, tmp_path):
    return replace(settings, weights_dir=tmp_path / "weights")


@pytest.fixture
def entries(monkeypatch):
    """Register test-only manifest entries."""

    def add(entry: WeightsEntry) -> str:
        monkeypatch.setitem(manifest.MANIFEST, entry.name, entry)
        return entry.name

    return add


@pytest.fixture
def file_server(tmp_path):
    """A static HTTP server on 127.0.0.1 serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/weights.tar"  # nothing listens there


def test_build_entry_is_built_once_and_rebuilt_when_stale(entries, weights_settings, monkeypatch):
    calls = []

    def fake_builder(dest):
        calls.append(dest)
        (dest / "model_index.json").write_text("{}")
        return dest

    monkeypatch.setitem(tiny.BUILDERS, "fake", fake_builder)
    name = entries(WeightsEntry("fake-model", build="fake"))
    folder = resolver.resolve(name, weights_settings)
    assert (folder / "model_index.json").is_file() and len(calls) == 1
    assert resolver.resolve(name, weights_settings) == folder and len(calls) == 1
    monkeypatch.setattr(tiny, "BUILD_VERSION", "next")
    resolver.resolve(name, weights_settings)
    assert len(calls) == 2
    # Nothing half-built is left next to the result.
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fake-model"]


def test_tiny_variant_builds_a_real_diffusers_folder(settings):
    folder = resolver.resolve("tiny-flux-schnell", settings)
    for part in ("model_index.json", "transformer", "vae", "tokenizer", "tokenizer_2"):
        assert (folder / part).exists(), part


def test_existing_folder_wins_without_network(entries, weights_settings):
    name = entries(WeightsEntry("local-model", sources=(Source(url=_dead_url()),)))
    target = weights_settings.weights_dir / name
    target.mkdir(parents=True)
    (target / "model_index.json").write_text("{}")
    assert resolver.resolve(name, weights_settings) == target


def make_tar(path, files: dict[str, bytes], links: dict[str, str] | None = None) -> None:
    with tarfile.open(path, mode="w") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, points_to in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, points_to
            tar.addfile(info)


def test_downloads_a_tar_from_the_first_working_source(entries, weights_settings, file_server):
    root, base = file_server
    payload = b'{"_class_name": "FluxPipeline"}'
    make_tar(root / "model.tar", {"model_index.json": payload})
    name = entries(
        WeightsEntry(
            "served-model",
            sources=(Source(url=f"{base}/missing.tar"), Source(url=f"{base}/model.tar")),
        )
    )
    folder = resolver.resolve(name, weights_settings)
    assert (folder / "model_index.json").read_bytes() == payload


def test_every_source_failing_names_the_variant_sources_and_fix(
    entries, weights_settings, file_server
):
    _, base = file_server
    dead = _dead_url()
    name = entries(
        WeightsEntry(
            "gated-model",
            sources=(Source(url=f"{base}/nothing.tar"), Source(url=dead)),
            gated=True,
        )
    )
    with pytest.raises(WeightsError) as err:
        resolver.resolve(name, weights_settings)
    message = str(err.value)
    for part in ("gated-model", f"{base}/nothing.tar", "404", dead, "HF_TOKEN"):
        assert part in message, part
    assert "script/download-weights gated-model" in message
    assert not (weights_settings.weights_dir / name).exists()


def test_no_download_allowed_is_an_error(entries, weights_settings):
    name = entries(WeightsEntry("offline-model", sources=(Source(url=_dead_url()),)))
    with pytest.raises(WeightsError, match="offline-model"):
        resolver.resolve(name, weights_settings, download=False)


def test_cli_resolves_every_entry_of_a_variant(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(resolver, "resolve", lambda name, settings: seen.append(name) or name)
    resolver.main(["tiny-flux-dev"])
    assert seen == ["tiny-flux-dev", "tiny-safety-checker", "tiny-falcon-nsfw"]


def test_weights_in_a_subfolder_of_the_tar_are_picked(entries, weights_settings, file_server):
    root, base = file_server
    make_tar(root / "dev.tar", {"FLUX.1-dev/model_index.json": b"{}", "FLUX.1-dev/vae/x": b"v"})
    source = Source(url=f"{base}/dev.tar", subdir="FLUX.1-dev")
    name = entries(WeightsEntry("nested-model", sources=(source,)))
    folder = resolver.resolve(name, weights_settings)
    assert (folder / "model_index.json").is_file() and (folder / "vae" / "x").read_bytes() == b"v"
    assert sorted(p.name for p in folder.parent.iterdir()) == ["nested-model"]


def test_hugging_face_cache_layout_is_materialised(entries, weights_settings, file_server):
    root, base = file_server
    snapshot = "models--Org--clf/snapshots/abc123"
    make_tar(
        root / "cache.tar",
        {"models--Org--clf/blobs/f00d": b'{"id2label": {}}'},
        links={f"{snapshot}/config.json": "../../blobs/f00d"},
    )
    source = Source(url=f"{base}/cache.tar", subdir="models--Org--clf/snapshots/*")
    name = entries(WeightsEntry("cached-model", sources=(source,), marker="config.json"))
    config = resolver.resolve(name, weights_settings) / "config.json"
    assert not config.is_symlink() and config.read_bytes() == b'{"id2label": {}}'


def test_a_download_without_the_marker_falls_through(entries, weights_settings, file_server):
    root, base = file_server
    make_tar(root / "wrong.tar", {"something/else.json": b"{}"})
    make_tar(root / "right.tar", {"model_index.json": b"{}"})
    sources = (Source(url=f"{base}/wrong.tar"), Source(url=f"{base}/right.tar"))
    name = entries(WeightsEntry("layout-model", sources=sources))
    folder = resolver.resolve(name, weights_settings)
    assert (folder / "model_index.json").is_file() and not (folder / "something").exists()


def test_an_existing_folder_without_the_marker_is_an_error(entries, weights_settings):
    name = entries(WeightsEntry("broken-model", sources=(Source(url=_dead_url()),)))
    (weights_settings.weights_dir / name).mkdir(parents=True)
    with pytest.raises(WeightsError, match="no model_index.json.*Remove it"):
        resolver.resolve(name, weights_settings)


def test_cli_takes_a_hugging_face_repo_id(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(resolver, "resolve_custom", lambda name, settings: seen.append(name))
    resolver.main(["RunDiffusion/Juggernaut-XL"])
    assert seen == ["RunDiffusion/Juggernaut-XL"]


def test_cli_skips_checkers_when_safety_is_off(monkeypatch):
    seen = []
    monkeypatch.setenv("SAFETY_CHECKER", "0")
    monkeypatch.setattr(resolver, "resolve", lambda name, settings: seen.append(name))
    resolver.main(["tiny-sdxl"])
    assert seen == ["tiny-sdxl", "tiny-sdxl-refiner"]

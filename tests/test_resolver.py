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
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/weights.tar"


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


def test_downloads_a_tar_from_the_first_working_source(entries, weights_settings, file_server):
    root, base = file_server
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        payload = b'{"_class_name": "FluxPipeline"}'
        info = tarfile.TarInfo("model_index.json")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    (root / "model.tar").write_bytes(data.getvalue())
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

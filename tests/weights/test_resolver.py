"""models/weights/resolver.py: local folder first, then build or download, else a clear error."""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.errors import WeightsError
from models.weights import builds
from models.weights import manifest, resolver
from models.weights.manifest import Source, WeightsEntry
from tools.fixtures.payloads import diffusers_folder, make_tar, safetensors_file, sha256
from tools.server import free_port


@pytest.fixture
def weights_settings(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(resolver, "RESUME_PAUSE_S", 0.0)
    return replace(settings, weights_dir=tmp_path / "weights")


@pytest.fixture
def entries(monkeypatch):
    """Register test-only manifest entries."""

    def add(entry: WeightsEntry) -> str:
        monkeypatch.setitem(manifest.MANIFEST, entry.name, entry)
        return entry.name

    return add


def serve_tar(hub, path: str, files: dict[str, bytes], **kw) -> Source:
    """Serve a tar of `files` at `path` on the hub; the Source for it, with its sha256."""
    data = make_tar(files, links=kw.pop("links", None))
    hub.files[path] = data
    return Source(url=hub.file_url(path), sha256=sha256(data), **kw)


def in_weights_dir(folder) -> list[str]:
    """What is in a weights folder besides the resolver's lock files."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/weights.tar"  # nothing listens there


def test_build_entry_is_built_once_and_rebuilt_when_stale(entries, weights_settings, monkeypatch):
    calls = []

    def fake_builder(dest):
        calls.append(dest)
        (dest / "model_index.json").write_text("{}")
        return dest

    monkeypatch.setitem(builds.BUILDERS, "fake", fake_builder)
    name = entries(WeightsEntry("fake-model", build="fake"))
    folder = resolver.resolve(name, weights_settings)
    assert (folder / "model_index.json").is_file() and len(calls) == 1
    assert resolver.resolve(name, weights_settings) == folder and len(calls) == 1
    monkeypatch.setattr(builds, "BUILD_VERSION", "next")
    resolver.resolve(name, weights_settings)
    assert len(calls) == 2
    # Nothing half-built is left next to the result.
    assert in_weights_dir(folder.parent) == ["fake-model"]


def test_a_damaged_build_is_rebuilt(entries, weights_settings, monkeypatch):
    calls = []

    def builder(dest):
        calls.append(dest)
        (dest / "model_index.json").write_text('{"unet": ["diffusers", "U"]}')
        (dest / "unet").mkdir()
        (dest / "unet" / "config.json").write_text("{}")
        (dest / "unet" / "model.safetensors").write_bytes(safetensors_file())

    monkeypatch.setitem(builds.BUILDERS, "fake", builder)
    name = entries(WeightsEntry("built-model", build="fake"))
    weights = resolver.resolve(name, weights_settings) / "unet" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated, e.g. a full disk
    assert resolver.resolve(name, weights_settings) and len(calls) == 2
    assert weights.read_bytes() == safetensors_file()


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


def test_downloads_a_tar_from_the_first_working_source(entries, weights_settings, hub):
    files = diffusers_folder()
    sources = (Source(url=hub.file_url("missing.tar")), serve_tar(hub, "model.tar", files))
    name = entries(WeightsEntry("served-model", sources=sources))
    folder = resolver.resolve(name, weights_settings)
    assert {p: (folder / p).read_bytes() for p in files} == files


def test_every_source_failing_names_the_variant_sources_and_fix(entries, weights_settings, hub):
    dead = _dead_url()
    missing = hub.file_url("nothing.tar")
    name = entries(
        WeightsEntry("gated-model", sources=(Source(url=missing), Source(url=dead)), gated=True)
    )
    with pytest.raises(WeightsError) as err:
        resolver.resolve(name, weights_settings)
    message = str(err.value)
    for part in ("gated-model", missing, "404", dead, "HF_TOKEN"):
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


def test_weights_in_a_subfolder_of_the_tar_are_picked(entries, weights_settings, hub):
    files = diffusers_folder("FLUX.1-dev/")
    source = serve_tar(hub, "dev.tar", files, subdir="FLUX.1-dev")
    name = entries(WeightsEntry("nested-model", sources=(source,)))
    folder = resolver.resolve(name, weights_settings)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert (folder / unet).read_bytes() == files[f"FLUX.1-dev/{unet}"]
    assert in_weights_dir(folder.parent) == ["nested-model"]


def test_hugging_face_cache_layout_is_materialised(entries, weights_settings, hub):
    snapshot = "models--Org--clf/snapshots/abc123"
    blobs = {"models--Org--clf/blobs/f00d": b'{"id2label": {}}'}
    blobs["models--Org--clf/blobs/beef"] = safetensors_file()
    links = {f"{snapshot}/config.json": "../../blobs/f00d"}
    links[f"{snapshot}/model.safetensors"] = "../../blobs/beef"
    source = serve_tar(
        hub, "cache.tar", blobs, links=links, subdir="models--Org--clf/snapshots/*"
    )
    name = entries(WeightsEntry("cached-model", sources=(source,), marker="config.json"))
    config = resolver.resolve(name, weights_settings) / "config.json"
    assert not config.is_symlink() and config.read_bytes() == b'{"id2label": {}}'


def test_a_download_without_the_marker_falls_through(entries, weights_settings, hub):
    wrong = serve_tar(hub, "wrong.tar", {"something/else.json": b"{}"})
    sources = (wrong, serve_tar(hub, "right.tar", diffusers_folder()))
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

"""Weights are installed whole or not at all (models/weights/resolver.py), against the local
stand-in (tools/fixtures/hub.py) for the CDN (its plain files) and the Hugging Face Hub."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from types import SimpleNamespace

import pytest

from models.errors import WeightsError
from models.weights import manifest, resolver
from models.weights.manifest import DIFFUSERS_FILES, Source, WeightsEntry
from tools.fixtures.hub import HfRepo, Hub
from tools.fixtures.payloads import diffusers_folder, make_tar, safetensors_file, sha256
from tools.server import free_port

UNET = "unet/diffusion_pytorch_model.safetensors"
REPO = "org/model"


@pytest.fixture
def weights_settings(settings, tmp_path, monkeypatch, hub):
    monkeypatch.setattr(resolver, "RESUME_PAUSE_S", 0.0)
    monkeypatch.setattr(
        "models.weights.download.CHUNK_SIZE", 64 * 2**10
    )  # many chunks, small files
    # huggingface_hub waits 1 s before each of its 5 retries of a broken download.
    monkeypatch.setattr("huggingface_hub.file_download.time", SimpleNamespace(sleep=lambda s: None))
    return replace(settings, weights_dir=tmp_path / "weights", **hub.endpoints())


@pytest.fixture
def entry(monkeypatch):
    """Register a test-only manifest entry named "model"."""

    def add(*sources: Source, **kw) -> str:
        monkeypatch.setitem(manifest.MANIFEST, "model", WeightsEntry("model", sources, **kw))
        return "model"

    return add


def hf_source() -> Source:
    return Source(hf_repo=REPO, allow_patterns=DIFFUSERS_FILES)


def served_tar(hub: Hub, files: dict[str, bytes], path: str = "model.tar") -> Source:
    data = make_tar(files)
    hub.files[path] = data
    return Source(url=hub.file_url(path), sha256=sha256(data))


def leftovers(weights_settings) -> list[str]:
    folder = weights_settings.weights_dir
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


def contents(folder) -> dict[str, bytes]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


# -- Hugging Face fallback: never installed half-done --


@pytest.mark.parametrize(
    "cut", ["model_index.json", UNET, "scheduler/scheduler_config.json"], ids=str
)
def test_an_interrupted_hugging_face_download_is_never_installed(
    entry, weights_settings, hub: Hub, cut
):
    files = diffusers_folder(size=20_000)
    hub.hf[REPO] = HfRepo(files)
    hub.cut[cut] = (100, 1)  # every attempt breaks after a byte
    name = entry(hf_source())
    with pytest.raises(WeightsError):
        resolver.resolve(name, weights_settings)
    target = weights_settings.weights_dir / name
    assert not target.exists()
    # The Hub unreachable now: what is on disk must still not become weights.
    offline = replace(weights_settings, hf_endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(WeightsError):
        resolver.resolve(name, offline)
    assert not target.exists()
    hub.cut.clear()
    downloads = dict(hub.downloads)
    assert contents(resolver.resolve(name, weights_settings)) == files
    # Resumed: files completed before the interruption were not fetched again.
    done_before = [p for p in files if p != cut and downloads.get(p)]
    assert all(hub.downloads[p] == downloads[p] for p in done_before), hub.downloads
    assert leftovers(weights_settings) == [name]


def test_a_file_not_matching_the_hubs_checksum_is_refused(entry, weights_settings, hub: Hub):
    files = diffusers_folder()
    hub.hf[REPO] = HfRepo(files)
    hub.tampered[UNET] = safetensors_file(seed=99)  # same size, other bytes
    name = entry(hf_source())
    with pytest.raises(WeightsError, match="checksums"):
        resolver.resolve(name, weights_settings)
    assert not (weights_settings.weights_dir / name).exists()
    hub.tampered.clear()
    assert contents(resolver.resolve(name, weights_settings)) == files


def test_a_repo_id_downloads_one_precision(weights_settings, hub: Hub):
    files = diffusers_folder()
    half = safetensors_file(size=500)
    files["unet/diffusion_pytorch_model.fp16.safetensors"] = half
    files["vae/config.json"] = b"{}"
    files["vae/diffusion_pytorch_model.safetensors"] = safetensors_file(seed=3)
    hub.hf["someone/finetune"] = HfRepo(files)
    folder = resolver.resolve_custom("someone/finetune", weights_settings)
    assert hub.downloads[UNET] == 0  # the fp32 UNet was not fetched
    assert (folder / "unet/diffusion_pytorch_model.fp16.safetensors").read_bytes() == half
    # A folder without an fp16 file keeps its only precision.
    assert (folder / "vae/diffusion_pytorch_model.safetensors").is_file()


def test_a_repo_missing_a_components_weights_is_refused(entry, weights_settings, hub: Hub):
    files = diffusers_folder()
    del files[UNET]
    hub.hf[REPO] = HfRepo(files)
    name = entry(hf_source())
    with pytest.raises(WeightsError, match="unet/ has no weights"):
        resolver.resolve(name, weights_settings)
    assert leftovers(weights_settings) == []


# -- The CDN source: resume first, clean up what will never be resumed --


def test_an_interrupted_url_download_is_resumed_right_away(entry, weights_settings, hub):
    files = diffusers_folder(size=200_000)
    name = entry(served_tar(hub, files))
    hub.cut_after, hub.cut_first = 1000, 2  # two answers break: one interruption
    assert contents(resolver.resolve(name, weights_settings)) == files  # in one call
    assert hub.served["model.tar"] < 1.5 * len(hub.files["model.tar"])  # resumed
    assert leftovers(weights_settings) == [name]


def test_when_every_source_fails_the_partial_download_is_kept_to_resume(
    entry, weights_settings, hub: Hub, monkeypatch
):
    monkeypatch.setattr(resolver, "RESUME_ATTEMPTS", 1)
    files = diffusers_folder(size=500_000)
    source = served_tar(hub, files)
    hub.cut_after, hub.cut_first = 1000, 1
    name = entry(source, hf_source())  # the Hub has no such repo
    with pytest.raises(WeightsError) as err:
        resolver.resolve(name, weights_settings)
    assert "resumes it" in str(err.value)
    partial = [p for p in leftovers(weights_settings) if p.endswith(".download")]
    assert len(partial) == 1  # the CDN's, kept
    fetched = hub.served["model.tar"]
    assert contents(resolver.resolve(name, weights_settings)) == files
    assert hub.served["model.tar"] - fetched < len(hub.files["model.tar"])  # resumed
    assert leftovers(weights_settings) == [name]


def test_what_another_source_made_useless_is_deleted(
    entry, weights_settings, hub: Hub, monkeypatch
):
    monkeypatch.setattr(resolver, "RESUME_ATTEMPTS", 1)
    files = diffusers_folder(size=500_000)
    hub.cut_after, hub.cut_first = 1000, 1
    hub.hf[REPO] = HfRepo(files)
    name = entry(served_tar(hub, files), hf_source())
    assert contents(resolver.resolve(name, weights_settings)) == files  # from the Hub
    assert leftovers(weights_settings) == [name]  # the CDN's partial download is gone


def test_a_tar_missing_weights_is_refused_and_not_kept(entry, weights_settings, hub):
    files = diffusers_folder()
    files[UNET] = files[UNET][:-100]  # truncated
    name = entry(served_tar(hub, files))
    with pytest.raises(WeightsError, match="truncated"):
        resolver.resolve(name, weights_settings)
    assert leftovers(weights_settings) == []


def test_an_existing_incomplete_folder_is_not_trusted(entry, weights_settings, hub):
    files = diffusers_folder()
    name = entry(served_tar(hub, files))
    folder = resolver.resolve(name, weights_settings)
    (folder / UNET).write_bytes(files[UNET][: len(files[UNET]) // 2])
    with pytest.raises(WeightsError, match=r"unet/ diffusion_pytorch_model.safetensors is trunc"):
        resolver.resolve(name, weights_settings)


def test_a_wrong_sha256_in_the_manifest_is_refused(entry, weights_settings, hub):
    source = served_tar(hub, diffusers_folder())
    name = entry(replace(source, sha256=sha256(b"something else")))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolver.resolve(name, weights_settings)
    assert leftovers(weights_settings) == []


# -- Two processes at once --


def _resolve_in_child(name, weights_settings, queue):
    try:
        queue.put(str(resolver.resolve(name, weights_settings)))
    except Exception as err:  # reported to the parent, which fails the test
        queue.put(f"error: {err}")


def test_two_processes_resolving_at_once_share_one_download(entry, weights_settings, hub):
    files = diffusers_folder(size=500_000)
    name = entry(served_tar(hub, files))
    context = multiprocessing.get_context("fork")  # the children see the test's manifest
    queue = context.Queue()
    children = [
        context.Process(target=_resolve_in_child, args=(name, weights_settings, queue))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    results = [queue.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
    target = str(weights_settings.weights_dir / name)
    assert results == [target, target], results
    assert contents(weights_settings.weights_dir / name) == files
    tar_size = len(hub.files["model.tar"])
    assert hub.served["model.tar"] <= tar_size + 1  # fetched once (plus the probe byte)
    assert leftovers(weights_settings) == [name]

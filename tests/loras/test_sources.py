"""LoRA sources: every form lora_weights accepts, fetched from local stand-ins for the file
host, Hugging Face, CivitAI and Replicate, and every failure named with its fix."""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from models.errors import InputError
from models.loras import fetch as lora_fetch
from models.loras.fetch import fetch_source
from models.loras.kinds import parse_source
from models.loras.source import Hosts, Tokens, pick_file
from tools.fixtures.hub import CivitaiModel, HfRepo, Hub
from tools.fixtures.payloads import make_tar

LORA = save({"transformer.x.lora_A.weight": torch.ones(2, 4)}, metadata={"k": "v"})


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hub():
    with Hub() as hub:
        yield hub


@pytest.fixture
def hosts(hub) -> Hosts:
    ends = hub.endpoints()
    return Hosts(ends["hf_endpoint"], ends["civitai_endpoint"], ends["replicate_endpoint"])


def fetch(value: str, tmp_path: Path, hosts: Hosts, tokens: Tokens = Tokens()) -> bytes:
    dest = tmp_path / "entry"
    dest.mkdir(exist_ok=True)
    fetch_source(parse_source(value, "lora_weights"), dest, tokens, hosts)
    return (dest / "lora.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("value", "kind", "location", "revision", "filename"),
    [
        ("owner/model", "replicate", "owner/model", None, None),
        ("owner/model/5c7d5dc6dd8b", "replicate", "owner/model", "5c7d5dc6dd8b", None),
        ("https://replicate.com/owner/model/versions/abc", "replicate", "owner/model", "abc", None),
        ("huggingface.co/me/repo", "huggingface", "me/repo", "main", None),
        ("https://huggingface.co/me/repo/tree/v2", "huggingface", "me/repo", "v2", None),
        (
            "https://hf.co/me/repo/blob/main/a/b.safetensors",
            "huggingface",
            "me/repo",
            "main",
            "a/b.safetensors",
        ),
        ("civitai.com/models/123/some-name?modelVersionId=456", "civitai", "123", "456", None),
        ("https://civitai.com/models/123", "civitai", "123", None, None),
        ("https://civitai.com/api/download/models/456?type=Model", "civitai", "", "456", None),
        (
            "https://x.example/a.safetensors?sig=1",
            "url",
            "https://x.example/a.safetensors?sig=1",
            None,
            None,
        ),
        ("/abs/lora.tar", "path", "/abs/lora.tar", None, None),
        (
            "data:application/octet-stream;base64,AAAA",
            "data",
            "data:application/octet-stream;base64,AAAA",
            None,
            None,
        ),
    ],
)
def test_every_form_is_read_as_cog_flux_reads_it(value, kind, location, revision, filename):
    source = parse_source(value, "extra_lora")
    assert (source.kind, source.location, source.revision, source.filename) == (
        kind,
        location,
        revision,
        filename,
    )
    assert source.input_name == "extra_lora"


@pytest.mark.parametrize(
    "value",
    ["not a source", "huggingface.co/only-owner", "civitai.com/user/someone", "ftp://x/y.tar"],
)
def test_unreadable_forms_name_the_input_and_list_the_forms(value):
    with pytest.raises(InputError, match="lora_weights") as err:
        parse_source(value, "lora_weights")
    assert "huggingface.co" in str(err.value) or "civitai.com" in str(err.value)


def test_pick_rule_prefers_the_lora_name_then_the_shallowest_shortest():
    assert pick_file(["b.safetensors"]) == ("b.safetensors", "the only .safetensors")
    files = ["x/lora.safetensors", "lora-000500.safetensors", "lora_comfy.safetensors", "a.txt"]
    assert pick_file(files)[0] == "x/lora.safetensors"
    assert pick_file(["pytorch_lora_weights.safetensors", "lora.safetensors"])[0] == (
        "lora.safetensors"
    )
    assert pick_file(["deep/a.safetensors", "style-v2.safetensors", "style.safetensors"])[0] == (
        "style.safetensors"
    )


def test_url_with_a_signed_query_is_fetched_and_never_logged(hub, hosts, tmp_path, caplog):
    url = hub.add_file("signed/lora.safetensors", LORA) + "?X-Amz-Signature=secret123"
    with caplog.at_level(logging.INFO, logger="models"):
        assert fetch(url, tmp_path, hosts) == LORA
    assert "secret123" not in caplog.text and "signed/lora.safetensors?..." in caplog.text


@pytest.mark.parametrize("archive", ["tar", "tar.gz", "zip"])
def test_archives_give_their_lora_and_the_choice_is_logged(hub, hosts, tmp_path, caplog, archive):
    members = {
        "output/lora.safetensors": LORA,
        "output/lora_comfyui.safetensors": b"other",
        "output/samples/0.png": b"png",
        "__MACOSX/._lora.safetensors": b"junk",
    }
    data = (
        zip_of(members)
        if archive == "zip"
        else make_tar(members, "w:gz" if "gz" in archive else "w")
    )
    # The name says nothing (Replicate's _weights, CivitAI ids): the bytes decide.
    url = hub.add_file(f"archives/weights-{archive.replace('.', '-')}", data)
    with caplog.at_level(logging.INFO, logger="models"):
        assert fetch(url, tmp_path, hosts) == LORA
    assert "using output/lora.safetensors" in caplog.text
    assert "lora_comfyui.safetensors" in caplog.text  # the others are listed


def test_data_uri_of_a_file_or_an_archive(hosts, tmp_path):
    for payload in (LORA, make_tar({"lora.safetensors": LORA})):
        uri = "data:application/x-tar;base64," + base64.b64encode(payload).decode()
        target = tmp_path / str(len(payload))
        target.mkdir()
        assert fetch(uri, target, hosts) == LORA


def test_local_file_folder_and_archive_are_read_and_never_moved(hosts, tmp_path):
    file = tmp_path / "mine.safetensors"
    file.write_bytes(LORA)
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "lora.safetensors").write_bytes(LORA)
    archive = tmp_path / "trained.tar"
    archive.write_bytes(make_tar({"lora.safetensors": LORA}))
    for i, source in enumerate((file, folder, archive)):
        (tmp_path / f"t{i}").mkdir()
        assert fetch(str(source), tmp_path / f"t{i}", hosts) == LORA
    assert file.read_bytes() == LORA and (folder / "sub" / "lora.safetensors").exists()


def test_hugging_face_repo_with_several_files_is_not_rejected(hub, hosts, tmp_path, caplog):
    hub.hf["me/styles"] = HfRepo(
        {"lora-step500.safetensors": b"x", "pytorch_lora_weights.safetensors": LORA, "a.md": b""}
    )
    with caplog.at_level(logging.INFO, logger="models"):
        assert fetch("huggingface.co/me/styles", tmp_path, hosts) == LORA
    assert "using pytorch_lora_weights.safetensors" in caplog.text
    (tmp_path / "b").mkdir()
    hub.hf["me/styles"].files["lora-step500.safetensors"] = LORA
    link = "https://huggingface.co/me/styles/resolve/main/lora-step500.safetensors"
    assert fetch(link, tmp_path / "b", hosts) == LORA


def test_private_and_gated_repos_need_the_token_which_is_never_logged(hub, hosts, tmp_path, caplog):
    hub.hf["me/private"] = HfRepo({"a.safetensors": LORA}, token="hf_topsecret")
    hub.hf["org/gated"] = HfRepo({"a.safetensors": LORA}, token="hf_topsecret", gated=True)
    with pytest.raises(InputError, match="hf_api_token"):
        fetch("huggingface.co/me/private", tmp_path, hosts)
    with pytest.raises(InputError, match="gated.*hf_api_token"):
        fetch("huggingface.co/org/gated", tmp_path, hosts)
    with caplog.at_level(logging.DEBUG):
        got = fetch("huggingface.co/org/gated", tmp_path, hosts, Tokens(huggingface="hf_topsecret"))
    assert got == LORA and "hf_topsecret" not in caplog.text
    assert "hf_topsecret" not in repr(Tokens(huggingface="hf_topsecret"))


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("huggingface.co/me/missing", ["no repository me/missing", "hf_api_token"]),
        ("huggingface.co/me/styles/tree/v9", ["no revision v9"]),
        ("huggingface.co/me/styles/resolve/main/nope.safetensors", ["no file nope.safetensors"]),
        ("huggingface.co/me/textonly", ["holds no .safetensors"]),
    ],
)
def test_hugging_face_failures_say_what_to_do(hub, hosts, tmp_path, value, words):
    hub.hf.setdefault("me/styles", HfRepo({"lora.safetensors": LORA}))
    hub.hf["me/textonly"] = HfRepo({"README.md": b"hi"})
    with pytest.raises(InputError) as err:
        fetch(value, tmp_path, hosts)
    for word in words:
        assert word in str(err.value)


def test_civitai_page_download_link_token_and_redirect(hub, hosts, tmp_path, caplog):
    hub.civitai[11] = CivitaiModel("LORA", {22: LORA, 21: b"older"}, token="civ_secret")
    tokens = Tokens(civitai="civ_secret")
    with caplog.at_level(logging.INFO, logger="models"):
        assert fetch("https://civitai.com/models/11/my-style", tmp_path, hosts, tokens) == LORA
    assert "newest version 22" in caplog.text and "civ_secret" not in caplog.text
    # The token went to CivitAI, not to the storage host it redirects to.
    sent = [h.get("Authorization") for _, p, h in hub.requests if p.startswith("storage/22")]
    assert sent and not any(sent)
    with pytest.raises(InputError, match="civitai_api_token"):
        fetch("civitai.com/models/11?modelVersionId=22", tmp_path, hosts)
    with pytest.raises(InputError, match="version id, not the page's model id"):
        fetch("civitai.com/api/download/models/11", tmp_path, hosts, tokens)
    hub.civitai[12] = CivitaiModel("Checkpoint", {30: LORA})
    with pytest.raises(InputError, match="is a Checkpoint, not a LoRA"):
        fetch("civitai.com/models/12", tmp_path, hosts)


def test_replicate_model_and_version_weights(hub, hosts, tmp_path):
    hub.replicate["owner/model"] = make_tar({"output/flux_train_replicate/lora.safetensors": LORA})
    hub.replicate["owner/model/v1"] = make_tar({"lora.safetensors": LORA})
    assert fetch("owner/model", tmp_path, hosts) == LORA
    assert fetch("replicate.com/owner/model/versions/v1", tmp_path, hosts) == LORA
    with pytest.raises(InputError, match="trained on Replicate"):
        fetch("owner/unknown", tmp_path, hosts)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", ["empty file"]),
        (b"<!DOCTYPE html><html><body>CivitAI</body></html>", ["web page", "download link"]),
        (b"\x80\x02}q\x00.", ["pickle", "convert it to .safetensors"]),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", ["not a readable .safetensors"]),
        (b"random bytes that are nothing", ["not a .safetensors file"]),
        (zip_of({"notes.txt": b"hi"}), ["holds no .safetensors", "notes.txt"]),
        (b"PK\x03\x04broken zip", ["archive", "broken"]),
    ],
)
def test_bad_files_are_refused_with_the_reason(hub, hosts, tmp_path, body, words):
    url = hub.add_file(f"bad/{abs(hash(body))}", body)
    with pytest.raises(InputError) as err:
        fetch(url, tmp_path, hosts)
    assert str(err.value).startswith("lora_weights: ")
    for word in words:
        assert word in str(err.value)


def test_http_errors_name_the_fix(hub, hosts, tmp_path):
    for status, words in ((404, "HTTP 404"), (403, "expired or be private"), (500, "HTTP 500")):
        url = hub.add_status(f"status/{status}.safetensors", status)
        with pytest.raises(InputError, match=words):
            fetch(url, tmp_path, hosts)


def test_unreachable_host_is_an_input_error(hosts, tmp_path):
    with pytest.raises(InputError, match="could not download"):
        fetch("http://127.0.0.1:9/lora.safetensors", tmp_path, hosts)


def test_files_too_large_for_a_lora_are_refused_before_download(hub, hosts, tmp_path, monkeypatch):
    monkeypatch.setattr(lora_fetch, "MAX_LORA_BYTES", 100)
    url = hub.add_file("big/lora.safetensors", LORA)
    with pytest.raises(InputError, match="limit"):
        fetch(url, tmp_path, hosts)
    assert not list(tmp_path.glob("entry/*"))

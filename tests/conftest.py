"""Shared fixtures: tiny models are built once into weights/ and reused."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from models.errors import InputError
from models.settings import REPO_ROOT, Settings, load_settings
from tools.server import http_json, model_ref, running


def _hermetic_environment() -> list[str]:
    """Tests set their own environment: a variable from the shell that runs them
    (MODEL_WEIGHTS, SAFETY_CHECKER, a Hugging Face token or endpoint...) must change
    nothing, neither in this process nor in the servers it starts. Every name
    models/settings.py reads is dropped, found in its source so none is forgotten."""
    source = (REPO_ROOT / "models" / "settings.py").read_text()
    names = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', source))
    names |= {name for name in os.environ if name.startswith(("HF_", "HUGGING"))}
    for name in names:
        os.environ.pop(name, None)
    os.environ["no_proxy"] = os.environ["NO_PROXY"] = "*"  # only local servers, never a proxy
    return sorted(names)


DROPPED = _hermetic_environment()


@pytest.fixture(autouse=True)
def _models_log_restored():
    """A predictor's setup() sends the models log to stdout (models/log.py to_stdout), which
    is pytest's capture of that one test: put the logger back as it was, or later tests
    log to a closed file."""
    logger = logging.getLogger("models")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(scope="session")
def settings() -> Settings:
    # Tiny builds are cached in the repo's weights/ folder across runs; tests never
    # download anything (only tiny `build` entries are resolved here).
    return replace(load_settings(), weights_dir=REPO_ROOT / "weights", device="cpu", model="")


@pytest.fixture
def hub():
    """A local stand-in for the file hosts (a CDN: ranges, ETags, cut connections, tokens),
    the Hugging Face Hub and the LoRA hosts (tools/fixtures/hub.py)."""
    from tools.fixtures.hub import Hub

    with Hub() as hub:
        yield hub


def write_image(path: Path, size=(640, 480), mode="RGB", color=(200, 40, 40)) -> Path:
    Image.new(mode, size, color).save(path)
    return path


def image_bytes(size=(64, 64), fmt="PNG", color=(10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.partition(",")[2])))


def assert_still_serving(server: str) -> None:
    status, health = http_json("GET", f"{server}/health-check")
    # BUSY: the previous prediction's slot is still being released.
    assert status == 200 and health["status"] in {"READY", "BUSY"}, health


@contextmanager
def serving(model: str, tmp_path_factory):
    """The real Cog server for `model`, as script/serve runs it; yields its base URL."""
    ref, env = model_ref(model)
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with running(ref, env=env, log_path=log_path) as url:
        yield url


def script_predict(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run script/predict as a user would, from `cwd`."""
    return subprocess.run(
        [REPO_ROOT / "script" / "predict", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_plan_rejects(model, tmp_path: Path, inputs: dict, words: list[str]) -> None:
    """plan() refuses `inputs` with an InputError naming each of `words`. "in.png" and
    "mask.png" values become real files."""
    write_image(tmp_path / "in.png")
    write_image(tmp_path / "mask.png", mode="L", color=255)
    values = {k: tmp_path / v if k in ("image", "mask") else v for k, v in inputs.items()}
    with pytest.raises(InputError) as err:
        model.plan(model.spec, model.inputs(prompt="x", **values))
    for word in words:
        assert word in str(err.value)


def pytest_collection_modifyitems(items):
    """A test that compiles (it uses compiled_flux) is slow: script/test -m 'not slow'
    skips it, script/test runs it."""
    for item in items:
        if "compiled_flux" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def compiled_flux(settings, tmp_path_factory):
    """tiny-flux-dev with its go_fast model compiled on this CPU (COMPILE=on), LoRA slots
    of rank 8, warmed up at setup as on a GPU. Compiling takes minutes here: share it."""
    from models.serving.model import DiffusionModel
    from models.specs import get_spec

    folder = tmp_path_factory.mktemp("compiled-flux")
    return DiffusionModel(get_spec("tiny-flux-dev"), fast_settings(settings, folder, compile="on"))


def fast_settings(settings, folder: Path, **go_fast) -> Settings:
    """Settings for a go_fast test: no safety checker, LoRA slots of rank 8, caches in
    `folder`; `go_fast` sets compile and fp8 (both "off" unless given)."""
    return replace(
        settings,
        safety_checker=False,
        lora_target_rank=8,
        lora_cache_dir=folder / "loras",
        compile_cache_dir=folder / "compile-cache",
        **{"compile": "off", "fp8": "off", **go_fast},
    )

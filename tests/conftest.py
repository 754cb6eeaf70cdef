"""Shared fixtures: tiny models are built once into weights/ and reused."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from models.settings import REPO_ROOT, Settings, load_settings
from tools.server import http_json


@pytest.fixture(scope="session")
def settings() -> Settings:
    # Tiny builds are cached in the repo's weights/ folder across runs; tests never
    # download anything (only tiny `build` entries are resolved here).
    return replace(load_settings(), weights_dir=REPO_ROOT / "weights", device="cpu", model="")


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

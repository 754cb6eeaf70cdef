"""The safety filter as predictors use it: loaded once, skippable, verdicts applied."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from types import SimpleNamespace

import pytest
from PIL import Image

from models.engine import extras, loading
from models.flux.plan import FluxInputs
from models.request.safety import NSFW_MESSAGE, NSFWError
from models.serving import model as serving
from models.serving.model import DiffusionModel
from models.settings import load_settings
from models.specs import get_spec
from models.weights import builds as builds_module
from models.weights import manifest, resolver
from models.weights.builds import build_tiny_compvis, build_tiny_falcon
from models.weights.manifest import WeightsEntry


def test_safety_checker_setting_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("SAFETY_CHECKER", "0")
    assert load_settings().safety_checker is False
    monkeypatch.setenv("SAFETY_CHECKER", "true")
    assert load_settings().safety_checker is True
    monkeypatch.delenv("SAFETY_CHECKER")
    assert load_settings().safety_checker is True


def test_disabled_deployment_neither_resolves_nor_loads_checkers(settings, monkeypatch):
    resolved = []
    real = resolver.resolve

    def spy(name, s, **kw):
        resolved.append(name)
        return real(name, s, **kw)

    # Everything setup resolves goes through these two: the pipeline, then the extras.
    monkeypatch.setattr(loading, "resolve", spy)
    monkeypatch.setattr(extras, "resolve", spy)
    model = DiffusionModel(get_spec("tiny-flux-schnell"), replace(settings, safety_checker=False))
    assert model.safety is None
    assert resolved == ["tiny-flux-schnell"]


@pytest.fixture(scope="module")
def strict_checkers():
    """Register tiny checkers with forced verdicts: stage 1 flags everything."""
    builds = {
        "strict-compvis": (lambda d: build_tiny_compvis(d, flag_all=True), "compvis-safety"),
        "falcon-says-nsfw": (lambda d: build_tiny_falcon(d, verdict="nsfw"), "vit-classifier"),
        "falcon-says-normal": (lambda d: build_tiny_falcon(d, verdict="normal"), "vit-classifier"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, (builder, loader) in builds.items():
            mp.setitem(builds_module.BUILDERS, name, builder)
            mp.setitem(manifest.MANIFEST, name, WeightsEntry(name, build=name, loader=loader))
        yield


def model_with(settings, safety: tuple[str, str]) -> DiffusionModel:
    spec = replace(get_spec("tiny-flux-schnell"), safety=safety)
    return DiffusionModel(spec, settings)


def small(**kw) -> FluxInputs:
    return FluxInputs(prompt="x", megapixels="0.25", num_inference_steps=1, seed=5, **kw)


def test_all_unsafe_fails_with_the_message(
    settings, strict_checkers, caplog, tmp_path, monkeypatch
):
    model = model_with(settings, ("strict-compvis", "falcon-says-nsfw"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where output folders go
    with caplog.at_level(logging.INFO, logger="models"), pytest.raises(NSFWError) as err:
        model.predict(small(num_outputs=2))
    assert str(err.value) == NSFW_MESSAGE
    assert not list(tmp_path.glob("out-*"))  # encoded while checking, then removed
    assert "NSFW content detected in image 0" in caplog.text
    assert "NSFW content detected in image 1" in caplog.text


def test_flagged_by_stage_one_but_cleared_by_stage_two_is_kept(settings, strict_checkers, caplog):
    model = model_with(settings, ("strict-compvis", "falcon-says-normal"))
    with caplog.at_level(logging.INFO, logger="models"):
        paths = model.predict(small(num_outputs=2))
    assert [p.name for p in paths] == ["out-0.webp", "out-1.webp"]
    assert "Total safe images: 2 out of 2" in caplog.text


def test_only_the_safe_images_stay_on_disk(tmp_path, monkeypatch):
    # Encoding runs while the checker does; an image found unsafe is deleted afterwards.
    class FlagsTheSecond:
        def check(self, images):
            return [SimpleNamespace(index=i, unsafe=i == 1) for i in range(len(images))]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    images = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    paths = serving.finish(
        images,
        safety=FlagsTheSecond(),
        disable_safety_checker=False,
        output_format="png",
        output_quality=80,
    )
    assert [p.name for p in paths] == ["out-0.png", "out-2.png"]
    (folder,) = tmp_path.glob("out-*")
    assert sorted(p.name for p in folder.iterdir()) == ["out-0.png", "out-2.png"]


def test_disable_safety_checker_skips_both_stages(settings, strict_checkers, caplog):
    model = model_with(settings, ("strict-compvis", "falcon-says-nsfw"))
    caplog.clear()  # setup logged loading the checkers by name
    with caplog.at_level(logging.INFO, logger="models"):
        paths = model.predict(small(disable_safety_checker=True))
    assert len(paths) == 1
    assert "safe" not in caplog.text.lower() and "nsfw" not in caplog.text.lower()

"""The two-stage NSFW filter, on tiny random checkers whose verdicts are forced."""

from __future__ import annotations

import logging
import shutil

import pytest
from PIL import Image

from models.errors import WeightsError
from models.request.safety import (
    NSFW_MESSAGE,
    NSFWError,
    SafetyChecker,
    Verdict,
    filter_safe,
)
from models.weights.builds import build_tiny_compvis, build_tiny_falcon


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    return {
        "flag_all": build_tiny_compvis(root / "compvis-all", flag_all=True),
        "flag_none": build_tiny_compvis(root / "compvis-none", flag_all=False),
        "nsfw": build_tiny_falcon(root / "falcon-nsfw", verdict="nsfw"),
        "normal": build_tiny_falcon(root / "falcon-normal", verdict="normal"),
    }


@pytest.fixture
def make_checker(tiny_dirs):
    def make(stage1: str, stage2: str) -> SafetyChecker:
        return SafetyChecker.load(tiny_dirs[stage1], tiny_dirs[stage2])

    return make


@pytest.fixture
def models_log(caplog):
    caplog.set_level(logging.DEBUG, logger="models")
    return caplog


def images(n: int) -> list[Image.Image]:
    # Not square, so the processors' resize and crop really run.
    return [Image.new("RGB", (40, 30), (60 * i, 255 - 60 * i, 128)) for i in range(n)]


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "models"]


def count_calls(monkeypatch, module) -> list:
    """Record each forward call of `module` (its inputs) while still running it."""
    calls, real = [], module.forward

    def forward(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)
    return calls


def force_stage1(monkeypatch, checker: SafetyChecker, flags: list[bool]) -> None:
    """Run the real stage-1 model but replace its per-image flags."""
    real = checker.compvis.forward

    def forward(clip_input, images):
        out, _ = real(clip_input=clip_input, images=images)
        return out, list(flags)

    monkeypatch.setattr(checker.compvis, "forward", forward)


def test_flagged_by_both_is_dropped_and_logged(make_checker, monkeypatch, models_log):
    checker = make_checker("flag_none", "nsfw")
    force_stage1(monkeypatch, checker, [False, True, False])
    batch = images(3)

    indices = filter_safe(batch, checker)

    assert indices == [0, 2]
    log = messages(models_log)
    assert "NSFW content detected in image 1" in log
    assert not any("image 0" in m or "image 2" in m for m in log)
    assert log[-1] == "Total safe images: 2 out of 3"


def test_flagged_by_stage1_but_cleared_by_stage2_is_kept(make_checker, models_log):
    checker = make_checker("flag_all", "normal")
    batch = images(2)

    assert checker.check(batch) == [Verdict(0, True, False, False), Verdict(1, True, False, False)]
    indices = filter_safe(batch, checker)

    assert indices == [0, 1]
    assert messages(models_log) == ["Total safe images: 2 out of 2"]


def test_stage2_never_runs_when_stage1_flags_nothing(make_checker, monkeypatch):
    # The falcon model here says "nsfw" to everything: had it run, images would be dropped.
    checker = make_checker("flag_none", "nsfw")
    falcon_calls = count_calls(monkeypatch, checker.falcon)
    batch = images(3)

    verdicts = checker.check(batch)
    indices = filter_safe(batch, checker)

    assert falcon_calls == []
    assert all(v.stage2_flagged is None and not v.unsafe for v in verdicts)
    assert indices == [0, 1, 2]


def test_all_unsafe_raises_the_cog_flux_message(make_checker, models_log):
    checker = make_checker("flag_all", "nsfw")

    with pytest.raises(NSFWError) as caught:
        filter_safe(images(2), checker)

    assert str(caught.value) == NSFW_MESSAGE
    assert NSFW_MESSAGE == (
        "All generated images contained NSFW content. Try running it again with a different prompt."
    )
    log = messages(models_log)
    assert "NSFW content detected in image 0" in log
    assert "NSFW content detected in image 1" in log


def test_disabled_keeps_everything_silently(models_log):
    batch = images(3)

    indices = filter_safe(batch, None)

    assert indices == [0, 1, 2]
    assert [r for r in models_log.records if r.name.startswith("models")] == []


def test_stage1_runs_once_for_the_whole_batch(make_checker, monkeypatch):
    checker = make_checker("flag_all", "normal")
    compvis_calls = count_calls(monkeypatch, checker.compvis)
    falcon_calls = count_calls(monkeypatch, checker.falcon)

    filter_safe(images(3), checker)

    assert len(compvis_calls) == 1
    assert compvis_calls[0]["clip_input"].shape[:2] == (3, 3)
    # Stage 2 runs per flagged image, one image at a time.
    assert [c["pixel_values"].shape[0] for c in falcon_calls] == [1, 1, 1]


def test_stage2_failure_counts_as_unsafe(make_checker, monkeypatch, models_log):
    # Stage 2 would clear every image; it breaks on the second one only.
    checker = make_checker("flag_all", "normal")
    real, calls = checker.falcon.forward, []

    def forward(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise RuntimeError("CUDA went away")
        return real(**kwargs)

    monkeypatch.setattr(checker.falcon, "forward", forward)
    batch = images(3)

    indices = filter_safe(batch, checker)

    assert indices == [0, 2]
    errors = [r for r in models_log.records if r.name == "models" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "image 1" in errors[0].getMessage() and "CUDA went away" in errors[0].getMessage()
    assert "NSFW content detected in image 1" in messages(models_log)


def test_stage2_failure_is_recorded_in_the_verdict(make_checker, monkeypatch):
    checker = make_checker("flag_all", "normal")

    def broken(**kwargs):
        raise ValueError("bad pixels")

    monkeypatch.setattr(checker.falcon, "forward", broken)

    [verdict] = checker.check(images(1))

    assert verdict.stage1_flagged and verdict.unsafe
    assert verdict.stage2_flagged is None
    assert "bad pixels" in verdict.stage2_error


def test_mixed_batch_keeps_the_right_indices(make_checker, monkeypatch, models_log):
    checker = make_checker("flag_none", "nsfw")
    force_stage1(monkeypatch, checker, [True, False, True, False, False])
    falcon_calls = count_calls(monkeypatch, checker.falcon)
    batch = images(5)

    indices = filter_safe(batch, checker)

    assert indices == [1, 3, 4]
    assert len(falcon_calls) == 2
    log = messages(models_log)
    assert [m for m in log if m.startswith("NSFW")] == [
        "NSFW content detected in image 0",
        "NSFW content detected in image 2",
    ]
    assert log[-1] == "Total safe images: 3 out of 5"


def test_load_accepts_a_feature_extractor_subfolder(tiny_dirs, tmp_path):
    compvis = shutil.copytree(tiny_dirs["flag_all"], tmp_path / "compvis")
    (compvis / "feature_extractor").mkdir()
    (compvis / "preprocessor_config.json").rename(
        compvis / "feature_extractor" / "preprocessor_config.json"
    )

    checker = SafetyChecker.load(compvis, tiny_dirs["nsfw"])

    assert checker.check(images(1))[0].unsafe


def test_load_without_preprocessor_uses_clip_defaults(tiny_dirs, tmp_path, models_log):
    compvis = shutil.copytree(tiny_dirs["flag_all"], tmp_path / "compvis")
    (compvis / "preprocessor_config.json").unlink()

    checker = SafetyChecker.load(compvis, tiny_dirs["nsfw"])

    # The real checker's CLIP ViT-L/14 takes 224 px (the tiny one 32, so no check() here).
    assert checker.compvis_processor.crop_size == {"height": 224, "width": 224}
    assert any("CLIP ViT-L/14 preprocessing" in m for m in messages(models_log))


def test_load_reports_missing_files(tiny_dirs, tmp_path):
    with pytest.raises(WeightsError, match="config.json is missing"):
        SafetyChecker.load(tiny_dirs["flag_all"], tmp_path / "nowhere")


def test_tiny_falcon_uses_the_real_labels(make_checker):
    checker = make_checker("flag_all", "nsfw")

    assert checker.falcon.config.id2label == {0: "normal", 1: "nsfw"}
    with pytest.raises(ValueError, match="verdict"):
        build_tiny_falcon(None, verdict="sfw")

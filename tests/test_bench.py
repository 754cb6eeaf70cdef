"""script/bench reports every figure it promises (values are never asserted as timings)."""

from __future__ import annotations

import pytest

from tools.bench import bench, bench_training

pytestmark = pytest.mark.server


def test_bench_reports_setup_server_bare_and_safety_figures():
    result = bench("tiny-flux-schnell", megapixels="0.25", steps=1, runs=1)
    assert (result["model"], result["size"], result["steps"]) == ("tiny-flux-schnell", "512x512", 1)
    assert result["weights_s"] >= 0  # 0 when the weights are already in weights/
    for key in ("setup_s", "server_e2e_s", "coglet_predict_time_s", "bare_pipeline_s"):
        assert result[key] > 0, key
    # The safety check ran inside the prediction, so its share is a fraction of it.
    assert 0 < result["safety_share"] < 1
    assert result["overhead_ratio"] == pytest.approx(
        result["server_e2e_s"] / result["bare_pipeline_s"], rel=0.01
    )


def test_bench_training_reports_steps_per_second_and_peak_memory():
    result = bench_training("tiny-flux-schnell", resolution=64, steps=2)
    assert (result["model"], result["train_steps"]) == ("tiny-flux-schnell", 2)
    assert result["train_steps_per_s"] > 0 and result["train_peak_memory_gb"] > 0

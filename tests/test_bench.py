"""script/bench reports every figure it promises (values are never asserted as timings)."""

from __future__ import annotations

import pytest

from tools.bench import bench

pytestmark = pytest.mark.server


def test_bench_reports_setup_server_bare_and_safety_figures():
    result = bench("tiny-flux-schnell", megapixels="0.25", steps=1, runs=1)
    assert (result["model"], result["size"], result["steps"]) == ("tiny-flux-schnell", "512x512", 1)
    assert isinstance(result["weights_s"], float)  # 0 when the weights are already here
    for key in (
        "setup_s",
        "server_e2e_s",
        "coglet_predict_time_s",
        "bare_pipeline_s",
        "overhead_ratio",
    ):
        assert result[key] > 0, key
    # The safety check ran inside the prediction, so its share is a fraction of it.
    assert 0 < result["safety_share"] < 1

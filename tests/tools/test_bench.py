"""script/bench reports every figure it promises (values are never asserted as timings)."""

from __future__ import annotations

import pytest

from tests.conftest import image_bytes
from tools.bench.e2e import bench, bench_training

pytestmark = pytest.mark.server


def test_bench_reports_setup_server_bare_and_safety_figures():
    result = bench("tiny-flux-schnell", megapixels="0.25", steps=1, runs=1)
    assert (result["model"], result["size"], result["steps"]) == ("tiny-flux-schnell", "512x512", 1)
    assert result["device"] == "cpu" and result["weights_s"] >= 0  # 0: already here
    for key in ("setup_s", "server_e2e_s", "coglet_predict_time_s", "bare_pipeline_s"):
        assert result[key] > 0, key
    # The client waited for the whole prediction, and the server's run is the bare
    # pipeline plus safety, encoding and HTTP: a ratio near 1, not orders of magnitude.
    assert result["server_e2e_s"] >= result["coglet_predict_time_s"]
    assert 0.5 < result["overhead_ratio"] < 20
    # The safety check ran inside the prediction, so its share is a fraction of it.
    assert 0 < result["safety_share"] < 1


def test_bench_lora_reports_each_load_path_and_the_request_ratio():
    from tools.bench.inputs import request_inputs
    from tools.bench.lora import bench_lora

    inputs = request_inputs("tiny-flux-schnell", megapixels="0.25", steps=1)
    result = bench_lora("tiny-flux-schnell", inputs, runs=1, rank=4, compile_it=False)
    for key in (
        "load_first_from_url_s",
        "load_from_disk_cache_s",
        "request_without_lora_s",
        "request_with_lora_s",
    ):
        assert result[key] > 0, key
    # A LoRA still on the device only gets its scale set: no fetch, no conversion.
    assert result["load_already_on_device_s"] < result["load_from_disk_cache_s"]
    assert result["lora_rank"] == 4 and 1_000 < result["lora_bytes"] < 1_000_000
    # One request each: too few to bound their ratio, which --runs makes a median of.
    assert result["lora_request_ratio"] > 0
    assert "recompiles_during_10_swaps" not in result  # only with --lora-compile


@pytest.mark.slow
def test_go_fast_bench_parts_measure_the_compiled_model(compiled_flux, tmp_path):
    from tools.bench.fast import recompiles, size_requests, step_seconds

    inputs = {"prompt": "x", "megapixels": "0.25", "num_inference_steps": 2, "seed": 1}
    fast = step_seconds(compiled_flux, inputs, go_fast=True, runs=1)
    eager = step_seconds(compiled_flux, inputs, go_fast=False, runs=1)
    assert 0.05 < fast / eager < 20  # one call of each: no warm-up left in either
    assert "forward" not in vars(compiled_flux.engine.eager)  # unwrapped again
    image = tmp_path / "in.png"
    image.write_bytes(image_bytes())
    sizes = size_requests("flux", image)
    assert len(sizes) == 24 and {r.get("num_outputs", 1) for r in sizes} == {1, 2, 3, 4}
    # The figure `script/bench --go-fast` prints, on the warmed-up model: no new graph.
    assert recompiles(compiled_flux, {"prompt": "x", "seed": 1}, tmp_path) == 0


def test_go_fast_bench_setup_runs_in_a_fresh_process():
    from tools.bench.fast import setup_in_fresh_process

    env = {"COMPILE": "off", "FP8": "off", "SAFETY_CHECKER": "0"}
    assert setup_in_fresh_process("tiny-flux-schnell", env) > 0


def test_stage_shares_cover_every_stage_of_a_request():
    from tools.bench.inputs import request_inputs
    from tools.bench.stages import bench_stages

    inputs = request_inputs("tiny-flux-schnell", megapixels="0.25", steps=2)
    result = bench_stages("tiny-flux-schnell", inputs, runs=1, go_fast=False)
    stages = (
        "text_encoding",
        "denoising",
        "vae_decode",
        "safety_check",
        "image_encoding",
        "base64",
    )
    for stage in stages:
        assert result[f"{stage}_s"] > 0, stage
    # Sequential stages cannot add up to more than the request (safety overlaps encoding).
    sequential = ("text_encoding", "denoising", "vae_decode", "image_encoding")
    assert sum(result[f"{s}_share"] for s in sequential) <= 1.0


@pytest.mark.parametrize(
    "model",
    ["flux-dev", "flux-fill-dev", "flux-kontext-dev", "flux-depth-dev", "flux-redux-dev", "sdxl"],
)
def test_full_size_bench_runs_its_real_architectures_code_at_toy_size(model):
    # The same builders and timing loop as --full-size on a GPU, with SMOKE dims on a CPU.
    from models.specs import get_spec
    from tools.bench.full import SMOKE, bench_full

    steps = get_spec(model).min_steps
    result = bench_full(model, runs=1, dims=SMOKE, size=512, steps=steps, configs=("eager",))
    # Kontext draws at its trained resolution, about 1 megapixel, whatever the size asked.
    assert result["size"] == ("1024x1024" if "kontext" in model else "512x512")
    assert result["eager_s"] > 0
    assert result["eager_path"] == "eager"


@pytest.mark.slow
def test_bench_training_reports_steps_per_second_and_peak_memory():
    result = bench_training("tiny-flux-schnell", resolution=64, steps=2)
    assert (result["model"], result["train_steps"]) == ("tiny-flux-schnell", 2)
    assert result["train_resolution"] == 64 and result["train_steps_per_s"] > 0
    # On a CPU: this process's peak resident memory, a tiny model's (well under this box).
    assert 0.1 < result["train_peak_memory_gb"] < 24


def test_step_cache_bench_counts_the_calls_it_saves():
    from tools.bench.cache import bench_step_cache

    result = bench_step_cache("tiny-flux-dev", steps=7, runs=1)
    assert (result["uncached_computed"], result["cached_computed"]) == (7, 4)  # 0, 1, 3, 6
    assert result["cached_s"] > 0 and result["uncached_s"] > 0
    assert result["mean_pixel_difference"] > 0

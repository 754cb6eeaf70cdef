"""models/engine/loading.py on tiny-sdxl: half precision kept by derived pipelines, and
MODEL_WEIGHTS (a single-file checkpoint, a folder, a Hugging Face repo id) in place of a
variant's weights."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from models.engine import loading
from models.errors import WeightsError
from models.sdxl.plan import SDXLInputs
from models.serving.model import DiffusionModel
from models.specs import get_spec
from models.weights.resolver import resolve

SMALL = dict(width=256, height=256, num_inference_steps=4)


def sizes(paths) -> list[tuple[int, int]]:
    return [Image.open(p).size for p in paths]


def test_derived_pipelines_keep_half_precision(settings):
    # from_pipe casts shared components to float32 unless told the dtype: on a GPU that
    # silently doubled the memory of every FLUX/SDXL model before derive_pipes.
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    weights = resolve("tiny-sdxl", settings)
    base = loading.load_pipeline(
        StableDiffusionXLPipeline, weights, dtype=torch.bfloat16, device="cpu"
    )
    loading.derive_pipes(base, {"img2img": StableDiffusionXLImg2ImgPipeline}, dtype=torch.bfloat16)
    assert base.unet.dtype == base.vae.dtype == torch.bfloat16


def test_model_weights_file_loads_as_a_single_file_checkpoint(settings, tmp_path, monkeypatch):
    # Converting the tiny model to the original single-file key layout is not feasible
    # here, so this checks the routing: a file goes to from_single_file, with the
    # variant's own folder as the config that describes it.
    from diffusers import StableDiffusionXLPipeline

    calls = []
    folder = resolve("tiny-sdxl", settings)

    def from_single_file(cls, path, **kwargs):
        calls.append((path, kwargs))
        return cls.from_pretrained(folder, dtype=kwargs["dtype"])

    monkeypatch.setattr(
        StableDiffusionXLPipeline, "from_single_file", classmethod(from_single_file)
    )
    checkpoint = tmp_path / "my-finetune.safetensors"
    checkpoint.write_bytes(b"not read by the stub")
    custom = replace(settings, safety_checker=False, model_weights=str(checkpoint))
    model = DiffusionModel(get_spec("tiny-sdxl"), custom)
    ((path, kwargs),) = calls
    assert path == str(checkpoint) and kwargs["config"] == str(folder)
    assert sizes(model.predict(SDXLInputs(prompt="x", **SMALL))) == [(256, 256)]


def test_model_weights_folder_and_repo_id_and_nonsense(settings, tmp_path, monkeypatch):
    folder = resolve("tiny-sdxl", settings)
    assert loading.main_weights(
        get_spec("tiny-sdxl"), replace(settings, model_weights=str(folder))
    ) == (folder, None)

    fetched = []

    def fake_download(source, dest, _settings):
        fetched.append(source.hf_repo)
        dest.mkdir(parents=True)
        (dest / "model_index.json").write_text("{}")

    monkeypatch.setattr("models.weights.resolver._download", fake_download)
    repo = replace(settings, weights_dir=tmp_path, model_weights="someone/sdxl-finetune")
    path, config = loading.main_weights(get_spec("tiny-sdxl"), repo)
    assert (path, config) == (tmp_path / "someone--sdxl-finetune", None)
    assert fetched == ["someone/sdxl-finetune"]

    with pytest.raises(WeightsError, match="MODEL_WEIGHTS"):
        loading.main_weights(get_spec("tiny-sdxl"), replace(settings, model_weights="/no/such"))

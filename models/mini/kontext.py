"""The mini Kontext: the mini FLUX (mini/flux-schnell: its VAE, encoders and transformer)
fine-tuned on edit pairs of the mini world (models/mini/edits.py), as FLUX.1 Kontext is
trained: the picture before the edit, encoded, follows the noisy latents in the
transformer's sequence at position-id index 1, and the velocity of the noisy part is
learnt. It has no guidance embedding (as the mini FLUX), so `guidance` changes nothing;
it is sampled by FluxKontextPipeline, at any number of steps (a flow model)."""

from __future__ import annotations

from pathlib import Path

import torch

from models.log import no_progress_bars
from models.mini.data import Fit, flow_times
from models.mini.edits import EditBatches
from models.mini.flux import encode_prompts, image_latents


def build(base: Path):
    """A FluxKontextPipeline of the mini FLUX's trained components, in float32."""
    from diffusers import FluxKontextPipeline

    if not (base / "model_index.json").is_file():
        raise FileNotFoundError(f"{base} is missing: train the mini FLUX first (--family flux).")
    no_progress_bars()
    pipe = FluxKontextPipeline.from_pretrained(base, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    # The configs saved name their source: the base's folder name, not this machine's path
    # (which would differ between rebuilds).
    for part, folder in ((pipe, ""), (pipe.vae, "/vae"), (pipe.transformer, "/transformer")):
        part.register_to_config(_name_or_path=f"mini/{base.name}{folder}")
    return pipe


def _packed(latents: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    tokens = FluxPipeline._pack_latents(latents, b, c, h, w)
    ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", tokens.dtype)
    ids[..., 0] = index
    return tokens, ids


def train(pipe, *, steps: int, seed: int, batch_size: int = 16, lr: float = 1e-3,
          edit_weight: float = 0.0, log=print):  # fmt: skip
    """Rectified flow on edits: the transformer learns the velocity (noise - picture
    after) of the noisy tokens, with the picture before beside them. With `edit_weight`,
    the error on tokens the edit changes counts (1 + edit_weight) times: a new shape in
    place of the old changes a few tokens, and unweighted the model learnt to copy the
    old shape (docs/benchmarks.md, the mini Kontext's runs). The weights written are an
    exponential moving average of the trained ones."""
    model = pipe.transformer
    batches = EditBatches(seed, batch_size)
    texts = encode_prompts(pipe, sorted({e.instruction for e in batches.edits}))
    generator = torch.Generator().manual_seed(seed)
    fit = Fit(model, steps=steps, name="kontext", log=log, lr=lr)
    for step in range(1, steps + 1):
        edits, starts, results = batches.next()
        x0, ids = _packed(image_latents(pipe, results), 0)
        before, before_ids = _packed(image_latents(pipe, starts), 1)
        embeds = torch.stack([texts[e.instruction][0] for e in edits])
        pooled = torch.stack([texts[e.instruction][1] for e in edits])
        t = flow_times(generator, len(edits), steps=28)
        noise = torch.randn(x0.shape, generator=generator)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        prediction = model(
            hidden_states=torch.cat([xt, before], dim=1),
            timestep=t,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3),
            img_ids=torch.cat([ids, before_ids]),
            return_dict=False,
        )[0][:, : x0.shape[1]]
        error = (prediction - (noise - x0)) ** 2
        if edit_weight:  # tokens the edit changes count more: a new shape's corners are few
            changed = ((x0 - before).abs().mean(-1, keepdim=True) > 0.1).float()
            error = error * (1 + edit_weight * changed)
        fit.step(step, error.mean())
    pipe.transformer = fit.result()
    return pipe

"""The mini FLUX: diffusers' FluxTransformer2DModel at small widths, trained from scratch
as a rectified flow on the mini world, with frozen random text encoders whose tokenizers
know the world's words. Sampled like schnell: 4 Euler steps, no guidance input."""

from __future__ import annotations

import string

import torch

from models.mini import vae as mini_vae
from models.mini.data import Batches, Fit, flow_times
from models.mini.world import WORDS
from models.weights.parts import (
    FluxDims,
    clip_text_model,
    clip_tokenizer,
    flux_scheduler,
    flux_transformer,
    t5_encoder,
    t5_tokenizer,
)

DIMS = FluxDims(
    heads=4, head_dim=24, double_blocks=2, single_blocks=2, rope_axes=(4, 10, 10),
    text_dim=64, pooled_dim=64,
)  # fmt: skip
# The world's prompts are at most 14 T5 tokens; a trigger word adds a few.
MAX_SEQUENCE_LENGTH = 32
_T5_CHARS = string.ascii_letters + string.digits + string.punctuation


def build(seed: int):
    """A FluxPipeline of untrained components (the encoders stay as built: frozen)."""
    from diffusers import FluxPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(words=WORDS)
    tokenizer_2 = t5_tokenizer(MAX_SEQUENCE_LENGTH, words=WORDS, chars=_T5_CHARS)
    # eval(): the encoders embed prompts as the served pipeline does. In training mode
    # T5's dropout (0.1) would perturb them, drawing on the global random state.
    t5 = t5_encoder(DIMS, len(tokenizer_2)).eval()
    transformer = flux_transformer(DIMS, guidance=False)
    clip = clip_text_model(len(tokenizer), hidden=64, projection=DIMS.pooled_dim).eval()
    return FluxPipeline(
        scheduler=flux_scheduler(guidance=False),
        text_encoder=clip,
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer_2,
        vae=mini_vae.build(16, flux=True),
        transformer=transformer,
    )


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    embeds, pooled, _ = pipe.encode_prompt(
        prompt=prompts, prompt_2=None, max_sequence_length=MAX_SEQUENCE_LENGTH
    )
    return {p: (embeds[i], pooled[i]) for i, p in enumerate(prompts)}


@torch.no_grad()
def image_latents(pipe, x: torch.Tensor) -> torch.Tensor:
    vae = pipe.vae
    latents = vae.encode(x).latent_dist.mean
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def train(pipe, *, steps: int, seed: int, batch_size: int = 16, log=print):
    """Rectified flow: the transformer learns the velocity (noise - picture) at noise
    level t, on packed latents with the image and text position ids the pipeline uses.
    The weights written are an exponential moving average of the trained ones."""
    from diffusers import FluxPipeline

    model = pipe.transformer
    batches = Batches(seed, batch_size)
    texts = encode_prompts(pipe, sorted({s.prompt for s in batches.scenes}))
    generator = torch.Generator().manual_seed(seed)
    fit = Fit(model, steps=steps, name="flux", log=log)
    for step in range(1, steps + 1):
        scenes, x = batches.next()
        latents = image_latents(pipe, x)
        b, c, h, w = latents.shape
        x0 = FluxPipeline._pack_latents(latents, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", x0.dtype)
        embeds = torch.stack([texts[s.prompt][0] for s in scenes])
        pooled = torch.stack([texts[s.prompt][1] for s in scenes])
        t = flow_times(generator, b)
        noise = torch.randn(x0.shape, generator=generator)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
        prediction = model(
            hidden_states=xt,
            timestep=t,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3),
            img_ids=img_ids,
            return_dict=False,
        )[0]
        fit.step(step, torch.nn.functional.mse_loss(prediction, noise - x0))
    pipe.transformer = fit.result()
    return pipe

"""The mini SDXL: diffusers' UNet2DConditionModel with SDXL's conditioning (two CLIP
encoders' penultimate states concatenated, pooled text plus size/crop ids), small
widths, trained from scratch on the mini world. Prompts are dropped 10% of the time,
to the zeros the pipeline gives an empty negative prompt, so classifier-free guidance
works.

Its schedule differs from SDXL's in two ways, both diffusers options:
- zero terminal SNR with v-prediction and "trailing" timesteps (Lin et al. 2023, "Common
  Diffusion Noise Schedules and Sample Steps are Flawed"). With SDXL's own schedule and
  noise prediction (tried first, 3000 steps) the picture still shows through the noise
  at the last timestep, and on an 8x8 latent its mean colour does so clearly, so the
  UNet learned to keep the noise's colour instead of the prompt's: backgrounds were
  right 20% of the time. Now it must take them from the prompt (96%; 100% with
  the cosine betas below).
- the cosine betas (squaredcos_cap_v2, made for 32-64 px images) instead of SDXL's
  scaled_linear, made for 128x128 latents. On a 16x16 latent the same noise level
  hides far more of the picture: with scaled_linear, img2img at prompt_strength 0.3
  (timestep 300, 56% of the signal's power kept) lost the input's shape; the cosine
  schedule keeps 79% there."""

from __future__ import annotations

import torch

from models.mini import vae as mini_vae
from models.mini.data import Batches, Fit
from models.mini.world import WORDS
from models.weights.parts import clip_text_model, clip_tokenizer

TEXT_WIDTH = 64  # each encoder's; the UNet attends to both, concatenated
DROP_PROMPT = 0.1
LAST_STEP_SHARE = 0.3  # of samples at the last timestep (pure noise): see flow_times


def scheduler():
    """Cosine betas rescaled to zero terminal SNR, v-prediction, trailing spacing: the
    scheduler inputs' classes read these from the saved config (Heun and PNDM have no
    zero-SNR option: they sample on the cosine betas as they are)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
    )


def unet():
    from diffusers import UNet2DConditionModel

    time_embed_dim = 32
    return UNet2DConditionModel(
        sample_size=16,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        transformer_layers_per_block=(1, 1, 1),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_WIDTH,
        cross_attention_dim=2 * TEXT_WIDTH,
    )


def build(seed: int):
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(words=WORDS)
    return StableDiffusionXLPipeline(
        vae=mini_vae.build(4, flux=False),
        # eval(), as served (their dropout is 0: training mode would not change them)
        text_encoder=clip_text_model(len(tokenizer), hidden=TEXT_WIDTH).eval(),
        text_encoder_2=clip_text_model(
            len(tokenizer), hidden=TEXT_WIDTH, projection=TEXT_WIDTH, with_projection=True
        ).eval(),
        tokenizer=tokenizer,
        tokenizer_2=clip_tokenizer(words=WORDS),
        unet=unet(),
        scheduler=scheduler(),
        add_watermarker=False,
    )


@torch.no_grad()
def encode_prompts(pipe, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    return {p: (embeds[i], pooled[i]) for i, p in enumerate(prompts)}


def train(pipe, *, steps: int, seed: int, batch_size: int = 16, log=print):
    model, scheduler = pipe.unet, pipe.scheduler
    batches = Batches(seed, batch_size)
    texts = encode_prompts(pipe, sorted({s.prompt for s in batches.scenes}))
    generator = torch.Generator().manual_seed(seed)
    alphas = scheduler.alphas_cumprod  # the last is 2**-24, not 0: Euler's sigma stays finite
    last = len(alphas) - 1
    fit = Fit(model, steps=steps, name="sdxl", log=log)
    for step in range(1, steps + 1):
        scenes, x = batches.next()
        with torch.no_grad():
            x0 = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        b, _, h, w = x.shape
        embeds = torch.stack([texts[s.prompt][0] for s in scenes])
        pooled = torch.stack([texts[s.prompt][1] for s in scenes])
        keep = (torch.rand(b, generator=generator) >= DROP_PROMPT).float()
        embeds, pooled = embeds * keep[:, None, None], pooled * keep[:, None]
        # original size, crop top-left, target size: what the pipeline sends by default
        time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32).repeat(b, 1)
        t = torch.randint(0, len(alphas), (b,), generator=generator)
        t = torch.where(torch.rand(b, generator=generator) < LAST_STEP_SHARE, last, t)
        noise = torch.randn(x0.shape, generator=generator)
        a = alphas[t].view(b, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        velocity = a.sqrt() * noise - (1 - a).sqrt() * x0
        prediction = model(
            noisy,
            t,
            encoder_hidden_states=embeds,
            added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids},
            return_dict=False,
        )[0]
        fit.step(step, torch.nn.functional.mse_loss(prediction, velocity))
    pipe.unet = fit.result()
    return pipe

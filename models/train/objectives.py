"""What each family trains: which model gets the LoRA, how captions and images are
encoded, and the loss of one batch.

FLUX: flow matching as in diffusers' FLUX LoRA example (Kontext: the same, with the
picture before the edit in the sequence, as diffusers' Kontext LoRA example): timesteps drawn with
`compute_density_for_timestep_sampling`, loss weighted by `compute_loss_weighting_for_sd3`,
target noise - latents, latents packed with FluxPipeline's own helpers; FLUX.1 [dev]'s
guidance embedding gets a fixed guidance value. schnell trains the same way, but it is
timestep-distilled: a LoRA trained on it keeps working at 1-4 steps only approximately.

SDXL: DDPM noise at uniform timesteps; the target is the noise or the velocity, as the
weights' scheduler config says (epsilon or v_prediction). Prompts are encoded by both
text encoders (the pipeline's own encode_prompt), with SDXL's size conditioning.

Every random draw of a sample comes from its own generator (models/train/data.py), and
each sample's loss is a masked mean: transparent pixels count for nothing.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

# LoRA targets. FLUX: every linear layer of the attention and MLPs in both kinds of
# blocks (as flux-fine-tuner trains), not the modulation layers nor the final proj_out.
FLUX_TARGETS = (
    r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj"
    r"|add_v_proj|to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out)"
)
# SDXL: the UNet's attention projections (diffusers' SDXL LoRA example and cog-sdxl).
SDXL_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def masked_mean(error: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean of `error` (B, C, h, w) over the pixels the mask (B, 1, H, W) keeps,
    the mask averaged down to the latents' size."""
    if mask is None:
        return error.flatten(1).mean(1)
    weight = F.adaptive_avg_pool2d(mask.to(error), error.shape[-2:])
    kept = (error * weight).flatten(1).sum(1)
    return kept / (weight.flatten(1).sum(1) * error.shape[1]).clamp_min(1e-8)


class Objective:
    trained: str  # the pipeline component that gets the LoRA
    targets: str | tuple[str, ...]

    def __init__(self, pipe, spec, config):
        self.pipe, self.spec, self.config = pipe, spec, config

    @property
    def model(self):
        return getattr(self.pipe, self.trained)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's parameters (mean and log-variance) for pixels (B, 3, H, W)."""
        vae = self.pipe.vae
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters

    def latents(self, moments: torch.Tensor, generators: list) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        draws = [
            DiagonalGaussianDistribution(m[None].float()).sample(generator=g)
            for m, g in zip(moments, generators, strict=True)
        ]
        vae = self.pipe.vae.config
        shift = vae.shift_factor or 0.0
        return (torch.cat(draws) - shift) * vae.scaling_factor


class FluxObjective(Objective):
    trained = "transformer"
    targets = FLUX_TARGETS

    def __init__(self, pipe, spec, config):
        super().__init__(pipe, spec, config)
        # The training schedule: 1000 timesteps, static shift only (what diffusers samples).
        self.schedule = copy.deepcopy(pipe.scheduler)

    @torch.no_grad()
    def encode_text(self, caption: str) -> dict:
        embeds, pooled, text_ids = self.pipe.encode_prompt(
            prompt=[caption],
            prompt_2=None,
            device=self.pipe.text_encoder.device,
            max_sequence_length=self.spec.max_sequence_length,
        )
        # text_ids get a batch axis so batches concatenate like the embeddings.
        return {"embeds": embeds.cpu(), "pooled": pooled.cpu(), "text_ids": text_ids[None].cpu()}

    def loss(self, model, latents, text: dict, extra: dict, generators: list) -> torch.Tensor:
        from diffusers import FluxPipeline
        from diffusers.training_utils import (
            compute_density_for_timestep_sampling,
            compute_loss_weighting_for_sd3,
        )

        device, dtype = latents.device, self.model.dtype
        scheme, batch = self.config.weighting_scheme, latents.shape[0]
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
        u = torch.cat([
            compute_density_for_timestep_sampling(
                scheme, 1, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=g
            )
            for g in generators
        ])  # fmt: skip
        indices = (u * self.schedule.config.num_train_timesteps).long()
        timesteps = self.schedule.timesteps[indices].to(device)
        sigmas = self.schedule.sigmas[indices].to(device).view(-1, 1, 1, 1)
        noise = noise.to(device)
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        _, channels, height, width = latents.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, device, dtype
        )
        guidance = None
        if self.model.config.guidance_embeds:
            guidance = torch.full((batch,), self.config.guidance, device=device)
        hidden, ids = self.sequence(packed, image_ids, extra)
        prediction = model(
            hidden_states=hidden.to(dtype),
            timestep=timesteps / 1000,
            guidance=guidance,
            pooled_projections=text["pooled"].to(device, dtype),
            encoder_hidden_states=text["embeds"].to(device, dtype),
            txt_ids=text["text_ids"][0].to(device, dtype),
            img_ids=ids,
            return_dict=False,
        )[0][:, : packed.shape[1]]
        factor = self.pipe.vae_scale_factor
        prediction = FluxPipeline._unpack_latents(
            prediction, height=height * factor, width=width * factor, vae_scale_factor=factor
        )
        weighting = compute_loss_weighting_for_sd3(scheme, sigmas)
        error = weighting.float() * (prediction.float() - (noise - latents).float()) ** 2
        return masked_mean(error, extra.get("mask"))

    def sequence(self, packed, image_ids, extra: dict):
        """The image tokens the transformer sees, and their position ids."""
        return packed, image_ids


class KontextObjective(FluxObjective):
    """FLUX.1 Kontext, as its pipeline runs it: the picture before the edit, encoded (its
    posterior's mean, as the pipeline encodes it) and packed, follows the noisy latents
    in the sequence at position-id index 1; only the noisy part's prediction is scored."""

    def start_latents(self, moments: torch.Tensor) -> torch.Tensor:
        mean = moments[:, : moments.shape[1] // 2].float()
        vae = self.pipe.vae.config
        return (mean - (vae.shift_factor or 0.0)) * vae.scaling_factor

    def sequence(self, packed, image_ids, extra: dict):
        from diffusers import FluxPipeline

        start = extra["start_latents"]
        batch, channels, height, width = start.shape
        tokens = FluxPipeline._pack_latents(start, batch, channels, height, width)
        ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, image_ids.device, image_ids.dtype
        )
        ids[..., 0] = 1
        return torch.cat([packed, tokens.to(packed)], dim=1), torch.cat([image_ids, ids])


class SDXLObjective(Objective):
    trained = "unet"
    targets = SDXL_TARGETS

    def __init__(self, pipe, spec, config):
        from diffusers import DDPMScheduler

        super().__init__(pipe, spec, config)
        self.schedule = DDPMScheduler.from_config(pipe.scheduler.config)

    @torch.no_grad()
    def encode_text(self, caption: str) -> dict:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=[caption],
            device=self.pipe.text_encoder.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return {"embeds": embeds.cpu(), "pooled": pooled.cpu()}

    def loss(self, model, latents, text: dict, extra: dict, generators: list) -> torch.Tensor:
        device, dtype = latents.device, self.model.dtype
        total = self.schedule.config.num_train_timesteps
        noise = torch.stack([torch.randn(latents.shape[1:], generator=g) for g in generators])
        timesteps = torch.cat([torch.randint(0, total, (1,), generator=g) for g in generators])
        noise, timesteps = noise.to(device), timesteps.to(device)
        noisy = self.schedule.add_noise(latents, noise, timesteps)
        kind = self.schedule.config.prediction_type
        if kind == "v_prediction":
            target = self.schedule.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        height, width = extra["size"]
        time_ids = torch.tensor(
            [[*orig, *crop, height, width] for orig, crop in zip(
                extra["original_size"], extra["crop_top_left"], strict=True)],
            device=device, dtype=dtype,
        )  # fmt: skip
        prediction = model(
            noisy.to(dtype),
            timesteps,
            encoder_hidden_states=text["embeds"].to(device, dtype),
            added_cond_kwargs={
                "text_embeds": text["pooled"].to(device, dtype),
                "time_ids": time_ids,
            },
            return_dict=False,
        )[0]
        error = (prediction.float() - target.float()) ** 2
        return masked_mean(error, extra.get("mask"))


# By ModelSpec.interface, else by family.
OBJECTIVES = {"flux": FluxObjective, "flux-kontext": KontextObjective, "sdxl": SDXLObjective}

"""The mini models' VAE: diffusers' AutoencoderKL with the real shape rules (4 levels =
8x downsampling; 16 latent channels for FLUX, 4 for SDXL), small widths, trained from
scratch on the mini world."""

from __future__ import annotations

import torch
from PIL import Image

from models.mini import judge, world
from models.mini.data import Batches, Fit, to_tensor

# The share of the VAE's training pictures in random colours, not the world's.
RECOLOUR = 0.5


def build(latent_channels: int, *, flux: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        # FLUX's VAE has no 1x1 convolutions around the latent; SDXL's has them.
        use_quant_conv=not flux,
        use_post_quant_conv=not flux,
        sample_size=64,
    )


def train(vae, *, steps: int, seed: int, batch_size: int = 16, log=print):
    """Reconstruction (MSE on a sampled latent) plus a small KL term, which keeps the
    latent's scale in check. The posterior's spread does not shrink much under it (the
    decoder learns to ignore that noise): sharpen_posterior removes it afterwards."""
    torch.manual_seed(seed)
    batches = Batches(seed, batch_size, recolour=RECOLOUR)
    generator = torch.Generator().manual_seed(seed)
    fit = Fit(vae, steps=steps, name="vae", log=log, decay=0.0, clip=0.0, average=False)
    for step in range(1, steps + 1):
        _, x = batches.next()
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        mse = torch.nn.functional.mse_loss(recon, x)
        fit.step(step, mse + 1e-6 * posterior.kl().mean(), shown=mse)
    fit.result()
    return vae


@torch.no_grad()
def set_latent_scale(vae, *, seed: int, flux: bool, batches: int = 8) -> None:
    """Record the shift and scale that bring this VAE's latents to zero mean and unit
    variance, as FLUX's (shift_factor, scaling_factor) and SDXL's (scaling_factor) do
    for theirs: the pipelines apply them, the sampler's noise then matches."""
    data = Batches(seed + 1, 16)
    latents = torch.cat(
        [vae.encode(data.next()[1]).latent_dist.mean.flatten() for _ in range(batches)]
    )
    mean, std = latents.mean().item(), latents.std().item()
    if flux:
        vae.register_to_config(shift_factor=round(mean, 4), scaling_factor=round(1 / std, 4))
    else:  # SDXL's pipelines have no shift: centre with the scale alone
        rms = latents.pow(2).mean().sqrt().item()
        vae.register_to_config(scaling_factor=round(1 / rms, 4))


@torch.no_grad()
def sharpen_posterior(vae) -> None:
    """Make the encoder's posterior a point (log-variance -20): the transformer/UNet
    learned from its means, and img2img, inpainting and LoRA training sample from it.
    Trained with a tiny KL weight, its spread stays near half the latents' own, noise
    the decoder learned to ignore but a denoiser would have to. Done last: nothing
    trained depends on it."""
    layer = vae.encoder.conv_out if vae.quant_conv is None else vae.quant_conv
    half = layer.out_channels // 2  # the second half of the channels is the log-variance
    layer.weight[half:].zero_()
    layer.bias[half:].fill_(-20.0)


@torch.no_grad()
def report(vae, *, log=print) -> dict[str, float]:
    """How well the VAE keeps colours through encode/decode, read back by the judge: the
    world's scenes, and scenes in the colour it never names (NEW_COLOURS)."""
    scenes = {
        "world": [s for s in world.all_scenes() if s.position == "centre"],
        "new colour": [
            scene
            for new in world.NEW_COLOURS
            for scene in (world.Scene("red", "circle", new),
                          world.Scene("white", "square", new, "left"),
                          world.Scene("yellow", "triangle", new, "top"),
                          world.Scene(new, "circle", "blue"),
                          world.Scene(new, "square", "black"))
        ],
    }  # fmt: skip
    scores = {}
    for name, group in scenes.items():
        x = to_tensor([world.render(s, 64, 64) for s in group])
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        pictures = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        pairs = [(s, Image.fromarray(p)) for s, p in zip(group, pictures, strict=True)]
        score = judge.score(pairs)
        scores[name] = min(score["background"], score["colour"])
        log(f"vae colours kept ({name}): {score}")
    return scores

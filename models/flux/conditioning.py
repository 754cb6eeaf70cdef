"""Model work some FLUX jobs need before their steps, on the loaded models: a control
image turned into the map Canny or Depth follows, and Redux's picture turned into the
prompt embeddings the transformer reads. The engine calls these inside a request."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# kornia's Canny hysteresis thresholds, on its gradient scale (Sobel normalised by 8, L2
# magnitude, after a 5x5 Gaussian of sigma 1): those of cv2.Canny(50, 200), which BFL's
# reference preprocessing for Canny [dev] uses, carried over from cv2's unnormalised L1
# scale (a full black-to-white step: 1020 there, 0.5 here).
CANNY_LOW, CANNY_HIGH = 50 / 1020 * 0.5, 200 / 1020 * 0.5


def canny_map(picture: Image.Image, device: str) -> Image.Image:
    """White edges on black, as Canny [dev] was trained on; kornia runs on `device`."""
    import kornia

    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)
    batch = pixels.permute(2, 0, 1)[None].to(device)
    _, edges = kornia.filters.canny(batch, low_threshold=CANNY_LOW, high_threshold=CANNY_HIGH)
    return _grey_to_rgb(edges[0, 0])


def depth_map(picture: Image.Image, estimator: tuple) -> Image.Image:
    """The estimator's relative depth at the picture's size, near bright and far dark,
    stretched to the full grey range (as transformers' depth-estimation pipeline does)."""
    model, processor = estimator
    inputs = processor(images=picture.convert("RGB"), return_tensors="pt")
    inputs = inputs.to(model.device, dtype=model.dtype)
    with torch.inference_mode():
        outputs = model(**inputs)
    depth = processor.post_process_depth_estimation(
        outputs, target_sizes=[(picture.height, picture.width)]
    )[0]["predicted_depth"].float()
    low, high = depth.min(), depth.max()
    return _grey_to_rgb((depth - low) / (high - low).clamp(min=1e-8))


def _grey_to_rgb(values: torch.Tensor) -> Image.Image:
    """An RGB picture of a [0, 1] map (H, W)."""
    grey = (values.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(grey, mode="L").convert("RGB")


def redux_embeddings(prior, base, job, *, max_sequence_length: int, dtype) -> dict:
    """The diffusers arguments that replace the prompt in a Redux job: the prompt's T5
    tokens (the base model's encoders, as without Redux) followed by the picture's redux
    tokens scaled by job.redux_strength, and the prompt's pooled CLIP embedding.

    The pipeline's own prompt_embeds_scale would scale the prompt's tokens with the
    picture's, so a prompt would fade with the picture; only the picture's are scaled."""
    text, pooled, _ = base.encode_prompt(
        prompt=job.prompt,
        prompt_2=None,
        device=base._execution_device,
        num_images_per_prompt=1,
        max_sequence_length=max_sequence_length,
    )
    out = prior(
        image=job.conditioning["redux_image"], prompt_embeds=text, pooled_prompt_embeds=pooled
    )
    embeds = out.prompt_embeds.clone()
    embeds[:, text.shape[1] :] *= job.redux_strength
    return dict(
        prompt=None,
        prompt_embeds=embeds.to(dtype),
        pooled_prompt_embeds=out.pooled_prompt_embeds.to(dtype),
    )

"""Image to image (SDEdit, Meng et al. 2022): encode the image, noise it to the level ``strength`` of the
schedule, and run only the remaining steps."""
from __future__ import annotations

import torch

from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.sampling import conditioning, decode, sample_latents, seeded_noise
from nanoldm.rng import BatchNoise, ImageNoise


def encode_images(parts: ModelParts, images: torch.Tensor, noise: ImageNoise | BatchNoise) -> torch.Tensor:
    """The images' latents as ``noise`` draws them from the VAE's posterior (``posterior_draw``: each image's own
    generator before its noise, or ComfyUI's posterior mean). One image is shared by the whole batch.
    Shapes: images (1 or B, 3, H, W) -> scaled latents (B, C, h, w)."""
    with frozen_weights():
        posterior = parts.vae.encode(images.to(parts.device, parts.dtype))
    return noise.posterior_draw(posterior) * parts.scale_factor


def img2img(parts: ModelParts, images: torch.Tensor, opts: GenerateOptions, *,
            progress: bool = False, monitor: SamplingMonitor | None = None) -> tuple[torch.Tensor, list[int]]:
    """Shapes: images (1 or B, 3, H, W) in [-1, 1] -> images (B, 3, H, W), B seeds."""
    parts.require_plain("img2img")
    noise, seeds = seeded_noise(parts, opts, images.shape[2], images.shape[3])
    init = encode_images(parts, images, noise)
    latents = sample_latents(parts, opts, noise, conditioning(parts, opts), init_latents=init, progress=progress,
                             monitor=monitor)
    return decode(parts, latents), seeds

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
    """Posterior samples, each drawn from its image's own generator before that image's noise (as diffusers
    does). One image is shared by the whole batch. With ComfyUI's batch noise (``rng.BatchNoise``), the posterior
    mean: ComfyUI samples it from torch's global generator, which no seed fixes.
    Shapes: images (1 or B, 3, H, W) -> scaled latents (B, C, h, w)."""
    with frozen_weights():
        posterior = parts.vae.encode(images.to(parts.device, parts.dtype))
    if isinstance(noise, BatchNoise):
        mean = posterior.mode()
        return mean.expand(noise.batch_shape[0], *mean.shape[1:]) * parts.scale_factor
    last = posterior.mean.shape[0] - 1
    draws = [posterior.item(min(i, last)).sample(g) for i, g in enumerate(noise.generators)]
    return torch.cat(draws) * parts.scale_factor


def img2img(parts: ModelParts, images: torch.Tensor, opts: GenerateOptions, *,
            progress: bool = False, monitor: SamplingMonitor | None = None) -> tuple[torch.Tensor, list[int]]:
    """Shapes: images (1 or B, 3, H, W) in [-1, 1] -> images (B, 3, H, W), B seeds."""
    parts.require_plain("img2img")
    noise, seeds = seeded_noise(parts, opts, images.shape[2], images.shape[3])
    init = encode_images(parts, images, noise)
    latents = sample_latents(parts, opts, noise, conditioning(parts, opts), init_latents=init, progress=progress,
                             monitor=monitor)
    return decode(parts, latents), seeds

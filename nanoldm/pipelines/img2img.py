"""Image to image (SDEdit, Meng et al. 2022): encode the image, noise it to the level ``strength`` of the
schedule, and run only the remaining steps."""
from __future__ import annotations

import torch

from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.sampling import conditioning, decode, denoise
from nanoldm.rng import ImageNoise


def encode_images(pipe, images: torch.Tensor, noise: ImageNoise) -> torch.Tensor:
    """Posterior samples, each drawn from its image's own generator before that image's noise (as diffusers
    does). One image is shared by the whole batch. Shapes: images (1 or B, 3, H, W) -> scaled latents (B, C, h, w)."""
    with frozen_weights():
        posterior = pipe.vae.encode(images.to(pipe.device, pipe.dtype))
    last = posterior.mean.shape[0] - 1
    draws = [posterior.item(min(i, last)).sample(g) for i, g in enumerate(noise.generators)]
    return torch.cat(draws) * pipe.model.config.vae.scale_factor


def img2img(pipe, images: torch.Tensor, opts: GenerateOptions, *, progress: bool = True):
    """``images`` (1 or B, 3, H, W) in [-1, 1]. Returns (images (B, 3, H, W), seeds)."""
    if pipe.unet.cfg.in_channels != pipe.unet.cfg.out_channels:
        raise ValueError(f"this is an inpainting model ({pipe.unet.cfg.in_channels} input channels): use inpaint")
    f = pipe.latent_factor
    seeds = [opts.seed + i for i in range(opts.batch_size)]
    noise = ImageNoise(seeds, (pipe.unet.cfg.out_channels, images.shape[2] // f, images.shape[3] // f),
                       device=pipe.device, dtype=pipe.dtype)
    init = encode_images(pipe, images, noise)
    latents = denoise(pipe, opts, noise, conditioning(pipe, opts), init_latents=init, progress=progress)
    return decode(pipe, latents), seeds

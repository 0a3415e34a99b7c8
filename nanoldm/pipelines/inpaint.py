"""Inpainting: regenerate the masked region of an image, keep the rest.

- Inpainting models (UNet input = latent + 1 mask channel + masked-image latent, 9 channels for SD): the mask and
  the masked image's latent are concatenated to the UNet input at every step (Rombach et al. 2022).
- Ordinary models: the known region is re-imposed from the noised original at every step (``KnownRegion``).
Either way the original pixels outside the mask are pasted back over the decoded result (``overlay``, as A1111 and
diffusers do by default); ``overlay=False`` returns what the model itself decoded, everywhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.img2img import encode_images
from nanoldm.pipelines.sampling import conditioning, decode, denoise
from nanoldm.rng import ImageNoise


def inpaint(pipe, images: torch.Tensor, mask: torch.Tensor, opts: GenerateOptions, *, progress: bool = True,
            overlay: bool = True):
    """``images`` (1, 3, H, W) in [-1, 1]; ``mask`` (1, 1, H, W), 1 = repaint. Returns (images, seeds)."""
    if mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{images.shape[-1]}x{images.shape[-2]}: they must be the same size")
    cfg, f, B = pipe.unet.cfg, pipe.latent_factor, opts.batch_size
    z_channels = pipe.model.config.vae.z_channels
    concat_channels = cfg.in_channels - cfg.out_channels
    if concat_channels not in (0, 1 + z_channels):
        raise ValueError(f"this model cannot inpaint: its UNet takes {cfg.in_channels} input channels "
                         f"(expected {cfg.out_channels} or {cfg.out_channels + 1 + z_channels})")
    images, mask = images.to(pipe.device, pipe.dtype), mask.to(pipe.device, pipe.dtype)
    h, w = images.shape[2] // f, images.shape[3] // f
    latent_mask = F.interpolate(mask, size=(h, w)).expand(B, -1, -1, -1)  # nearest
    seeds = [opts.seed + i for i in range(B)]
    noise = ImageNoise(seeds, (cfg.out_channels, h, w), device=pipe.device, dtype=pipe.dtype)

    if concat_channels:  # an inpainting model
        with frozen_weights():
            masked = pipe.vae.encode(images * (mask < 0.5)).mode() * pipe.model.config.vae.scale_factor
        cond = conditioning(pipe, opts, concat=torch.cat([latent_mask, masked.expand(B, -1, -1, -1)], dim=1))
        init = encode_images(pipe, images, noise) if opts.strength < 1.0 else None
        latents = denoise(pipe, opts, noise, cond, init_latents=init, progress=progress)
    else:
        init = encode_images(pipe, images, noise)
        latents = denoise(pipe, opts, noise, conditioning(pipe, opts), init_latents=init,
                          repaint_mask=latent_mask, progress=progress)
        latents = latent_mask * latents + (1 - latent_mask) * init
    out = decode(pipe, latents)
    return (mask * out + (1 - mask) * images if overlay else out), seeds

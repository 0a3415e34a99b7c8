"""Inpainting: regenerate the masked region of an image, keep the rest.

- Inpainting models (UNet input = latent + 1 mask channel + masked-image latent, 9 channels for SD): the mask and
  the masked image's latent (:mod:`nanoldm.conditioning.mask`, the same inputs the model was trained on) are
  concatenated to the UNet input at every step (Rombach et al. 2022).
- Ordinary models: the known region is re-imposed from the noised original at every step (``KnownRegion``).
Either way the original pixels outside the mask are pasted back over the decoded result (``overlay``, as A1111 and
diffusers do by default); ``overlay=False`` returns what the model itself decoded, everywhere.
"""
from __future__ import annotations

import warnings

import torch

from nanoldm.conditioning.mask import inpaint_concat, latent_mask, masked_image_latents
from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.img2img import encode_images
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.sampling import conditioning, decode, sample_latents, seeded_noise


def inpaint(parts: ModelParts, images: torch.Tensor, mask: torch.Tensor, opts: GenerateOptions, *,
            progress: bool = False, overlay: bool = True,
            monitor: SamplingMonitor | None = None) -> tuple[torch.Tensor, list[int]]:
    """Shapes: images (1, 3, H, W) in [-1, 1], mask (1, 1, H, W), 1 = repaint -> images (B, 3, H, W), B seeds."""
    if mask.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"the mask is {mask.shape[-1]}x{mask.shape[-2]} but the image is "
                         f"{images.shape[-1]}x{images.shape[-2]}: they must be the same size")
    C, B = parts.latent_channels, opts.batch_size
    if parts.concat_channels and not parts.inpainting:
        raise ValueError(f"this model cannot inpaint: its UNet takes {C + parts.concat_channels} input channels "
                         f"(expected {C} or {2 * C + 1})")
    if not mask.any():
        warnings.warn("the mask is empty (all black): nothing will be repainted and the image comes back as it was "
                      "(white marks what to repaint)", stacklevel=3)
    images, mask = images.to(parts.device, parts.dtype), mask.to(parts.device, parts.dtype)
    noise, seeds = seeded_noise(parts, opts, images.shape[2], images.shape[3])
    small_mask = latent_mask(mask, parts.latent_size(images.shape[2], images.shape[3])).to(mask)
    if parts.inpainting:
        with frozen_weights():
            masked = masked_image_latents(parts.vae, images, mask, parts.scale_factor)
        cond = conditioning(parts, opts, concat=inpaint_concat(mask, masked).expand(B, -1, -1, -1))
        init = (_masked_content(parts, opts, encode_images(parts, images, noise), small_mask, seeds, images.shape)
                if opts.strength < 1.0 else None)
        latents = sample_latents(parts, opts, noise, cond, init_latents=init, progress=progress,
                                 monitor=monitor)
    else:
        init = _masked_content(parts, opts, encode_images(parts, images, noise), small_mask, seeds, images.shape)
        small_mask = small_mask.expand(B, -1, -1, -1)
        latents = sample_latents(parts, opts, noise, conditioning(parts, opts), init_latents=init,
                                 repaint_mask=small_mask, progress=progress, monitor=monitor)
        latents = small_mask * latents + (1 - small_mask) * init
    out = decode(parts, latents)
    return (mask * out + (1 - mask) * images if overlay else out), seeds


def _masked_content(parts: ModelParts, opts: GenerateOptions, init: torch.Tensor, small_mask: torch.Tensor,
                    seeds: list[int], shape: torch.Size) -> torch.Tensor:
    """A1111's "Masked content" in latent space (``StableDiffusionProcessingImg2Img.init``): 2 "latent noise"
    puts a fresh draw of each image's seed where the mask is, 3 "latent nothing" zeros there; 0 "fill" (done on
    the pixels before) and 1 "original" keep the encoded image. Shapes: init (B, C, h, w), small_mask (1, 1, h, w)."""
    if opts.inpainting_fill == 2:
        fresh = parts.noise(seeds, shape[2], shape[3])()  # create_random_tensors(shape, seeds): no extras
        return init * (1 - small_mask) + fresh * small_mask
    if opts.inpainting_fill == 3:
        return init * (1 - small_mask)
    return init

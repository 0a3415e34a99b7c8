"""Mask conditioning: the inputs of an inpainting UNet (Rombach et al. 2022; SD inpainting).

The UNet gets 4 + 1 + 4 input channels: the noisy latent, then ``concat = [mask, masked-image latent]`` --
the mask (1 = repaint) at latent size (nearest), and the VAE latent (posterior mode, times ``scale_factor``)
of the image with the masked pixels zeroed. Training (``MaskLDMTask``) and the inpaint pipeline
(:mod:`nanoldm.pipelines.inpaint`) both build these inputs with the functions below.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel mask -> latent-size mask, nearest. Shapes: (B, 1, H, W) -> (B, 1, h, w)."""
    return F.interpolate(mask.float(), size=size)


@torch.no_grad()
def masked_image_latents(vae, images: torch.Tensor, mask: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """Latent of the images with the masked pixels zeroed. Shapes: images (B, 3, H, W) in [-1, 1],
    mask (B, 1, H, W), 1 = repaint -> (B, C, h, w) scaled."""
    return vae.encode(images * (mask < 0.5)).mode() * scale_factor


def inpaint_concat(mask: torch.Tensor, masked_latents: torch.Tensor) -> torch.Tensor:
    """The extra input channels. Shapes: mask (B, 1, H, W), masked_latents (B, C, h, w) -> (B, 1 + C, h, w)."""
    return torch.cat([latent_mask(mask, masked_latents.shape[-2:]).to(masked_latents), masked_latents], dim=1)


def candidate_masks(object_masks: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Training masks per image: each object's mask, then the whole image (so the model also learns plain
    generation, as SD's inpainting training mixes in). Shapes: object_masks (N, M, H, W) bool, present (N, M)
    bool -> masks (N, M + 1, H, W) float, valid (N, M + 1) bool."""
    N, M, H, W = object_masks.shape
    full = torch.ones(N, 1, H, W, dtype=torch.float32)
    masks = torch.cat([object_masks.float() * present[..., None, None], full], dim=1)
    valid = torch.cat([present, torch.ones(N, 1, dtype=torch.bool)], dim=1)
    return masks, valid


def build_concat_table(vae, images: torch.Tensor, masks: torch.Tensor, scale_factor: float, *,
                       batch_size: int = 64) -> torch.Tensor:
    """The concat channels of every (image, candidate mask) pair, encoded once.
    Shapes: images (N, 3, H, W) uint8, masks (N, K, H, W) -> (N, K, 1 + C, h, w)."""
    N, K, H, W = masks.shape
    device = next(vae.parameters()).device
    out = []
    for k in range(K):
        rows = []
        for s in range(0, N, batch_size):
            x = images[s:s + batch_size].to(device).float() / 127.5 - 1.0
            m = masks[s:s + batch_size, k:k + 1].to(device)
            rows.append(inpaint_concat(m, masked_image_latents(vae, x, m, scale_factor)))
        out.append(torch.cat(rows))
    return torch.stack(out, dim=1)

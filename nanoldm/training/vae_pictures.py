"""Pictures of autoencoders: rows of image tensors as one grid, and the sampleability picture that shows why
diffusion needs a VAE's latent space rather than a plain autoencoder's."""
from __future__ import annotations

import torch
from PIL import Image, ImageDraw

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.pipelines.images import tensor_to_pil


@torch.no_grad()
def sampleability_picture(vae: AutoencoderKL, ae: AutoencoderKL, n: int = 8, generator: torch.Generator | None = None,
                          *, size: int = 32, zoom: int = 2) -> Image.Image:
    """Random latents decoded by the plain AE (top row) and by the VAE (bottom row).

    "Random latent" means what a diffusion model would be asked to produce: eps ~ N(0, I) in each model's
    *scaled* latent space, i.e. z = eps / scale_factor. Both models thus get latents of their own overall
    scale (a fair test); the VAE's KL has pulled its posterior towards a Gaussian, so its decodings are
    shapes-like images, while the AE's latents fill an irregular set and random points decode to noise.
    Output: (label_width + n * size * zoom) x (2 * size * zoom) pixels, RGB.
    """
    h = size // vae.cfg.downsample_factor
    eps = torch.randn(n, vae.cfg.z_channels, h, h, generator=generator)
    rows = [m.eval().decode(eps / m.cfg.scale_factor).clamp(-1, 1) for m in (ae, vae)]
    return rows_picture(rows, labels=["AE", "VAE"], zoom=zoom)


def rows_picture(rows: list[torch.Tensor], labels: list[str] | None = None, zoom: int = 2) -> Image.Image:
    """A grid, one row per (n, 3, H, W) tensor, with an optional text label left of each row."""
    n, (H, W) = rows[0].shape[0], rows[0].shape[-2:]
    tile_w, tile_h = W * zoom, H * zoom
    left = 40 if labels else 0
    grid = Image.new("RGB", (left + n * tile_w, len(rows) * tile_h), "white")
    draw = ImageDraw.Draw(grid)
    for r, images in enumerate(rows):
        for c, im in enumerate(tensor_to_pil(images)):
            grid.paste(im.resize((tile_w, tile_h), Image.Resampling.NEAREST), (left + c * tile_w, r * tile_h))
        if labels:
            draw.text((4, r * tile_h + tile_h // 2 - 5), labels[r], fill="black")
    return grid

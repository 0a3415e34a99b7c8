"""Text to image: Gaussian noise in latent space, denoised under classifier-free guidance, decoded by the VAE."""
from __future__ import annotations

from nanoldm.options import GenerateOptions
from nanoldm.pipelines.sampling import conditioning, decode, denoise
from nanoldm.rng import ImageNoise


def txt2img(pipe, opts: GenerateOptions, *, progress: bool = True):
    """Returns (images in [-1, 1] (B, 3, H, W), seeds). ``opts`` must be resolved (seed, size) and validated."""
    f = pipe.latent_factor
    shape = (pipe.unet.cfg.out_channels, opts.height // f, opts.width // f)
    if pipe.unet.cfg.in_channels != shape[0]:
        raise ValueError(f"this is an inpainting model ({pipe.unet.cfg.in_channels} input channels): use inpaint")
    seeds = [opts.seed + i for i in range(opts.batch_size)]
    noise = ImageNoise(seeds, shape, device=pipe.device, dtype=pipe.dtype)
    latents = denoise(pipe, opts, noise, conditioning(pipe, opts), progress=progress)
    return decode(pipe, latents), seeds

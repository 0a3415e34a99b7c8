"""Text to image: Gaussian noise in latent space, denoised under classifier-free guidance, decoded by the VAE."""
from __future__ import annotations

import torch

from nanoldm.options import GenerateOptions
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.sampling import conditioning, decode, sample_latents, seeded_noise


def txt2img(parts: ModelParts, opts: GenerateOptions, *, progress: bool = False,
            monitor: SamplingMonitor | None = None) -> tuple[torch.Tensor, list[int]]:
    """``opts`` must be resolved (seed, size) and validated. Shapes: -> images (B, 3, H, W) in [-1, 1], B seeds."""
    parts.require_plain("txt2img")
    noise, seeds = seeded_noise(parts, opts, opts.height, opts.width)
    latents = sample_latents(parts, opts, noise, conditioning(parts, opts), progress=progress, monitor=monitor)
    return decode(parts, latents), seeds

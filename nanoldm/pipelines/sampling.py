"""The part every pipeline shares: prompts -> conditioning, seeded noise -> sampler -> latents, latents -> images."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.rng import ImageNoise
from nanoldm.samplers import get_sampler
from nanoldm.text.encode import encode_prompt_pair


@dataclass
class KnownRegion:
    """Inpainting with an ordinary model: outside the mask the latent is re-imposed from the original, noised to
    the current sigma, before and after every model call (as A1111 does), so only the masked region is generated.

    Shapes: latents (B, C, h, w) scaled; mask (B, 1, h, w), 1 = repaint; noise like latents.
    """

    denoiser: Denoiser
    latents: torch.Tensor
    mask: torch.Tensor
    noise: torch.Tensor

    def __call__(self, x: torch.Tensor, sigma, cond: Conditioning) -> torch.Tensor:
        keep = 1.0 - self.mask
        x = self.mask * x + keep * (self.latents + self.noise * _column(sigma, x))
        return self.mask * self.denoiser(x, sigma, cond) + keep * self.latents


def _column(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, *([1] * (x.dim() - 1))) if sigma.dim() else sigma


def conditioning(pipe, opts: GenerateOptions, *, concat: torch.Tensor | None = None) -> Conditioning:
    """Prompt and negative prompt encoded (A1111 syntax, 75-token chunks) and repeated for the batch."""
    with torch.no_grad():
        cond, uncond = encode_prompt_pair(pipe.text_encoder, pipe.tokenizer, opts.prompt, opts.negative_prompt,
                                          clip_skip=opts.clip_skip)
    B = opts.batch_size
    return Conditioning(context=cond.expand(B, -1, -1), uncond_context=uncond.expand(B, -1, -1),
                        cfg_scale=opts.cfg_scale, concat=concat)


def denoise(pipe, opts: GenerateOptions, noise: ImageNoise, cond: Conditioning, *,
            init_latents: torch.Tensor | None = None, repaint_mask: torch.Tensor | None = None,
            progress: bool = True) -> torch.Tensor:
    """Run the chosen sampler. txt2img starts from pure noise; with ``init_latents`` (scaled) only the last
    ``strength`` part of the schedule is run, from the init latents noised to that level. With
    ``repaint_mask`` (B, 1, h, w) only the masked region is generated (see ``KnownRegion``).

    Shapes: -> (B, C, h, w) scaled latents.
    """
    spec = get_sampler(opts.sampler)
    sigmas = spec.sigmas(pipe.schedule, opts.steps)
    if init_latents is None:
        x = noise() * spec.init_noise_sigma(sigmas)
    else:
        sigmas = spec.img2img_sigmas(sigmas, opts.strength)
        if len(sigmas) < 2:  # strength 0: nothing to re-run
            return init_latents
        start_noise = noise()
        x = init_latents + start_noise * sigmas[0]
    denoiser = Denoiser(pipe.unet, pipe.schedule, pipe.model.config.schedule.prediction_type,
                        quantize=spec.quantize)
    if repaint_mask is not None:
        denoiser = KnownRegion(denoiser, init_latents, repaint_mask, start_noise)
    with frozen_weights(), tqdm(total=len(sigmas) - 1, desc=spec.name, unit="step", disable=not progress,
                               leave=False) as bar:
        return spec.sample(denoiser, x, sigmas.to(x.device), cond=cond, noise=noise, eta=opts.eta,
                           callback=lambda i, x, denoised: bar.update())


def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1]. Shapes: (B, C, h, w) -> (B, 3, h*f, w*f)."""
    with frozen_weights():
        return pipe.vae.decode(latents / pipe.model.config.vae.scale_factor)


def sample_contexts(pipe, context: torch.Tensor, uncond_context: torch.Tensor | None, seeds: list[int], *,
                    sampler: str = "Euler a", steps: int = 20, cfg_scale: float = 7.0) -> torch.Tensor:
    """txt2img from ready contexts, one image per row and seed, at the model's native size: what prompts become
    (``nanoldm eval`` batches many prompts) and what class and layout conditions give directly.

    Shapes: context (B, L, D), uncond_context (B, L, D) or None -> images (B, 3, H, W) in [-1, 1].
    """
    size = pipe.model.config.image_size
    opts = GenerateOptions(sampler=sampler, steps=steps, cfg_scale=cfg_scale, seed=seeds[0], width=size,
                           height=size, batch_size=len(seeds))
    opts.validate(pipe.latent_factor)
    f = pipe.latent_factor
    noise = ImageNoise(seeds, (pipe.unet.cfg.out_channels, size // f, size // f), device=pipe.device,
                       dtype=pipe.dtype)
    cond = Conditioning(context=context.to(pipe.device, pipe.dtype), cfg_scale=cfg_scale,
                        uncond_context=None if uncond_context is None else uncond_context.to(pipe.device, pipe.dtype))
    return decode(pipe, denoise(pipe, opts, noise, cond, progress=False))

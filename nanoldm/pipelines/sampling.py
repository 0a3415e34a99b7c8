"""The one sampling path every generation shares: prompts -> conditioning, seeded noise -> sigmas -> Denoiser ->
sampler -> latents (:func:`sample_latents`), latents -> images (:func:`decode`).

txt2img, img2img, inpainting, ``nanoldm eval``'s batches, class / layout models and the training previews all
come through :func:`sample_latents`; :func:`sample_contexts` is its form for ready contexts (one image per row).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import plan
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor, StopSampling
from nanoldm.rng import BatchNoise, ImageNoise, batch_seeds
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
        return self.with_uncond(x, sigma, cond, uncond=False)[0]

    def with_uncond(self, x: torch.Tensor, sigma, cond: Conditioning, *, uncond: bool = True):
        """(denoised, uncond_denoised) as ``Denoiser.with_uncond``; only the guided estimate is re-imposed
        outside the mask (ComfyUI's ``KSamplerX0Inpaint`` blends the output, not what CFG++ reads)."""
        keep = 1.0 - self.mask
        x = self.mask * x + keep * (self.latents + self.noise * _column(sigma, x))
        denoised, uncond_denoised = (self.denoiser.with_uncond(x, sigma, cond) if uncond
                                     else (self.denoiser(x, sigma, cond), None))
        return self.mask * denoised + keep * self.latents, uncond_denoised


def _column(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, *([1] * (x.dim() - 1))) if sigma.dim() else sigma


def conditioning(parts: ModelParts, opts: GenerateOptions, *, concat: torch.Tensor | None = None) -> Conditioning:
    """Prompt and negative prompt encoded (A1111 syntax, 75-token chunks; weights as ``opts.like``'s tool
    applies them) and repeated for the batch.
    Shapes: concat (B, C_extra, h, w) or None."""
    with torch.no_grad():
        cond, uncond = encode_prompt_pair(parts.text_encoder, parts.tokenizer, opts.prompt, opts.negative_prompt,
                                          clip_skip=opts.clip_skip,
                                          emphasis="comfyui" if opts.like == "comfyui" else "original")
    B = opts.batch_size
    return Conditioning(context=cond.expand(B, -1, -1), uncond_context=uncond.expand(B, -1, -1),
                        cfg_scale=parts.guidance(opts.cfg_scale), concat=concat)


def seeded_noise(parts: ModelParts, opts: GenerateOptions, height: int, width: int) -> tuple[ImageNoise, list[int]]:
    """The batch's seeds (``rng.batch_seeds``: A1111's, one seed for all with a variation seed) and their noise for
    images of ``height`` x ``width`` pixels, with ``opts``' seed extras (variation seed, resize seed from, ENSD)."""
    if opts.like == "comfyui":  # one draw for the batch, every image under the one seed
        return BatchNoise(opts.seed, opts.batch_size, (parts.latent_channels, *parts.latent_size(height, width)),
                          device=parts.device, dtype=parts.dtype), [opts.seed] * opts.batch_size
    seeds, subseeds = batch_seeds(opts.seed, opts.batch_size, opts.subseed, opts.subseed_strength)
    resize = None
    if opts.seed_resize_from_h > 0 and opts.seed_resize_from_w > 0:  # A1111: both, or off
        resize = parts.latent_size(opts.seed_resize_from_h, opts.seed_resize_from_w)
    noise = parts.noise(seeds, height, width, subseeds=subseeds, subseed_strength=opts.subseed_strength,
                        resize_from=resize, ensd=opts.ensd)
    return noise, seeds


def sample_latents(parts: ModelParts, opts: GenerateOptions, noise: ImageNoise, cond: Conditioning, *,
                   init_latents: torch.Tensor | None = None, repaint_mask: torch.Tensor | None = None,
                   hires_steps: int | None = None, progress: bool = False,
                   monitor: SamplingMonitor | None = None) -> torch.Tensor:
    """Run ``opts.sampler`` for ``opts.steps``. From pure noise (txt2img); with ``init_latents`` (scaled) only
    the last ``opts.strength`` part of the schedule is run, from the init latents noised to that level (SDEdit);
    with ``repaint_mask`` as well, only the masked region is generated (see ``KnownRegion``); with ``hires_steps``
    (like="a1111"), exactly that many steps of a schedule stretched by ``opts.strength`` are run (A1111's img2img
    with fixed steps, as its Hires. fix runs it: ``pipelines/hires.py``).
    ``monitor`` sees every step (:mod:`~nanoldm.pipelines.progress`); when it asks for an end, the run stops after
    the current step and returns that step's x0 prediction (A1111's interrupt).

    Shapes: init_latents (B, C, h, w), repaint_mask (B, 1, h, w) -> (B, C, h, w) scaled latents.
    """
    # sigmas, starting level and sampler, under the conventions of opts.like
    sampling = plan(parts.schedule, opts, noise, img2img=init_latents is not None, hires_steps=hires_steps)
    if init_latents is None:
        x = noise() * sampling.start_sigma
    else:
        if len(sampling.sigmas) < 2:  # strength 0: nothing to re-run
            return init_latents
        start_noise = noise()
        x = init_latents + start_noise * sampling.start_sigma
    denoiser = Denoiser(parts.unet, parts.schedule, parts.prediction_type, quantize=sampling.quantize,
                        timestep=sampling.timestep)
    if repaint_mask is not None:
        denoiser = KnownRegion(denoiser, init_latents, repaint_mask, start_noise)
    steps = len(sampling.sigmas) - 1

    def callback(i: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        bar.update()
        if monitor is not None:
            monitor.on_step(i + 1, steps, denoised, render=lambda z: tensor_to_pil(decode(parts, z))[0])

    with frozen_weights(), tqdm(total=steps, desc=sampling.name, unit="step", disable=not progress,
                               leave=False) as bar:
        try:
            return sampling.run(denoiser, x, cond, callback)
        except StopSampling:
            return monitor.latest


def decode(parts: ModelParts, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1]. Shapes: (B, C, h, w) -> (B, 3, h*f, w*f)."""
    with frozen_weights():
        return parts.vae.decode(latents / parts.scale_factor)


def sample_contexts(parts: ModelParts, opts: GenerateOptions, context: torch.Tensor,
                    uncond_context: torch.Tensor | None, seeds: list[int], *,
                    concat: torch.Tensor | None = None) -> torch.Tensor:
    """txt2img from ready contexts, one image per row and seed, at ``opts``' size (default: the native one):
    what prompts become (``nanoldm eval`` batches many prompts), what class and layout conditions give directly,
    and the training previews. ``opts``' prompt, seed and batch size are not used.

    Shapes: context (B, L, D), uncond_context (B, L, D) or None, concat (B, C_extra, h, w) or None
    -> images (B, 3, H, W) in [-1, 1].
    """
    opts = dataclasses.replace(opts, seed=seeds[0], batch_size=len(seeds),
                               width=opts.width or parts.image_size, height=opts.height or parts.image_size)
    opts.validate(parts.latent_factor)
    noise = parts.noise(seeds, opts.height, opts.width)
    cond = Conditioning(context=context.to(parts.device, parts.dtype), cfg_scale=parts.guidance(opts.cfg_scale),
                        uncond_context=None if uncond_context is None else uncond_context.to(parts.device, parts.dtype),
                        concat=None if concat is None else concat.to(parts.device, parts.dtype))
    return decode(parts, sample_latents(parts, opts, noise, cond))

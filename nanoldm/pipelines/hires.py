"""A1111's Hires. fix (version 1.10, ``modules/processing.py``: ``StableDiffusionProcessingTxt2Img``): txt2img at
the requested size, then an img2img pass at a larger one.

1. First pass: plain txt2img (:func:`~nanoldm.pipelines.sampling.sample_latents` from the seeds' noise).
2. Target size (``calculate_target_resolution``): ``hr_scale`` times the size, or ``hr_resize_x`` x ``hr_resize_y``
   (one of them 0: the other side keeps the aspect ratio; both: scaled to cover, then the latent cropped centred).
3. Upscale (``sample_hr_pass``): a Latent mode interpolates the latents (``torch.nn.functional.interpolate``,
   A1111's ``latent_upscale_modes``); a pixel upscaler (Lanczos, Nearest) decodes, makes 8-bit pixels the way
   A1111 does (truncating), resizes them (``images.resize_image`` -> ``Upscaler.upscale``) and encodes them again;
   the posterior is sampled from torch's global generator as A1111 leaves it: seeded with the batch's last seed.
4. Second pass: fresh noise from the same seeds (A1111 builds a new ``ImageRNG``: variation seed, resize seed from
   and ENSD apply again), and ``hr_second_pass_steps`` (default: ``steps``) steps of the sampler ``hr_sampler_name``
   (default: the first pass's) with the prompts ``hr_prompt`` / ``hr_negative_prompt`` (default: the first pass's):
   A1111's img2img with fixed steps (``conventions.a1111_img2img_steps``): a schedule of
   int(steps / min(strength, 0.999)) steps, of which the last ``steps`` run, from the upscaled latents plus the
   noise times the first of those sigmas. (With ``like="diffusers"``: diffusers' img2img share of ``steps``.)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.layers.frozen import frozen_weights
from nanoldm.options import GenerateOptions, check_sampler
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.pipelines.sampling import conditioning, decode, sample_latents, seeded_noise

# A1111's shared.latent_upscale_modes: name -> (interpolate mode, antialias); "Latent" is its default
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# A1111's upscalers that need no network (modules/upscaler.py: UpscalerLanczos, UpscalerNearest)
PIXEL_UPSCALERS = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}
UPSCALER_NAMES = (*LATENT_UPSCALERS, *PIXEL_UPSCALERS)
DEFAULT_UPSCALER = "Latent"


@dataclass(frozen=True)
class HiresTarget:
    """Where the second pass goes: upscale to ``width`` x ``height`` pixels, then crop ``truncate_x`` /
    ``truncate_y`` latent cells (A1111's names), half on each side, the odd one at the end."""

    width: int
    height: int
    truncate_x: int = 0
    truncate_y: int = 0


def upscaler_name(name: str | None) -> str:
    """A1111's upscaler name, matched case-insensitively; None is "Latent". An unknown one lists the valid ones."""
    if name is None:
        return DEFAULT_UPSCALER
    for known in UPSCALER_NAMES:
        if known.lower() == str(name).strip().lower():
            return known
    raise ValueError(f"unknown hires upscaler {name!r}; valid names: {', '.join(UPSCALER_NAMES)}")


def hires_target(opts: GenerateOptions, latent_factor: int) -> HiresTarget:
    """A1111's ``calculate_target_resolution`` for resolved ``opts``; ValueError when a size it gives is not a
    positive multiple of ``latent_factor`` (A1111 would silently round it down)."""
    w, h = opts.width, opts.height
    truncate = (0, 0)
    if opts.hr_resize_x == 0 and opts.hr_resize_y == 0:
        if opts.hr_scale <= 0:
            raise ValueError(f"hires scale must be positive, got {opts.hr_scale}")
        to = (int(w * opts.hr_scale), int(h * opts.hr_scale))
        how = f"{w}x{h} scaled by {opts.hr_scale:g} is"
    else:
        if opts.hr_resize_x < 0 or opts.hr_resize_y < 0:
            raise ValueError(f"hires resize must be >= 0, got {opts.hr_resize_x}x{opts.hr_resize_y}")
        rx, ry = opts.hr_resize_x, opts.hr_resize_y
        if ry == 0:
            to = (rx, rx * h // w)
        elif rx == 0:
            to = (ry * w // h, ry)
        else:
            to = (rx, rx * h // w) if w / h < rx / ry else (ry * w // h, ry)
            truncate = ((to[0] - rx) // latent_factor, (to[1] - ry) // latent_factor)
        how = f"hires resize {rx}x{ry} of {w}x{h} gives"
    if min(to) < latent_factor or to[0] % latent_factor or to[1] % latent_factor:
        raise ValueError(f"{how} {to[0]}x{to[1]}, not a multiple of the model's latent factor {latent_factor}: "
                         f"choose a hires scale or resize that gives multiples of {latent_factor}")
    return HiresTarget(*to, *truncate)


def validate_hires(opts: GenerateOptions, latent_factor: int) -> None:
    """Every impossible Hires. fix setting of resolved ``opts``, as a ValueError (nothing when it is off)."""
    if not opts.enable_hr:
        return
    upscaler_name(opts.hr_upscaler)
    hires_target(opts, latent_factor)
    if opts.hr_second_pass_steps < 0:
        raise ValueError(f"hires steps must be >= 0 (0: the same as steps), got {opts.hr_second_pass_steps}")
    if opts.hr_sampler_name is not None or opts.hr_scheduler is not None:
        second = second_pass_options(opts)
        check_sampler(second.sampler, second.scheduler, opts.like)


def second_pass_options(opts: GenerateOptions) -> GenerateOptions:
    """The second pass's sampler, schedule type, steps and prompts."""
    return dataclasses.replace(opts, sampler=opts.hr_sampler_name or opts.sampler,
                               scheduler=opts.hr_scheduler or opts.scheduler,
                               steps=opts.hr_second_pass_steps or opts.steps, prompt=opts.hr_prompt or opts.prompt,
                               negative_prompt=opts.hr_negative_prompt or opts.negative_prompt)


def upscale_pixels(image: Image.Image, width: int, height: int, method: Image.Resampling) -> Image.Image:
    """A1111's ``images.resize_image`` (mode 0, "just resize") through a Lanczos or Nearest ``Upscaler.upscale``:
    one resize by the scale, to the scaled size floored to a multiple of 8 (Lanczos), then to the target (Lanczos)."""
    scale = max(width / image.width, height / image.height)
    if scale > 1.0:
        dest = (int((image.width * scale) // 8 * 8), int((image.height * scale) // 8 * 8))
        image = image.resize((int(image.width * scale), int(image.height * scale)), resample=method)
        if image.size != dest:
            image = image.resize(dest, resample=Image.Resampling.LANCZOS)
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
    return image


def _pixel_upscaled_latents(parts: ModelParts, latents: torch.Tensor, target: HiresTarget,
                            method: Image.Resampling, last_seed: int) -> torch.Tensor:
    """Decode, 8-bit by truncation, upscale, encode; the posterior drawn from one generator seeded ``last_seed``,
    image after image (A1111's global generator). Shapes: (B, C, h, w) -> (B, C, H / f, W / f) scaled latents."""
    decoded = torch.cat([decode(parts, latents[i:i + 1]) for i in range(len(latents))])  # one by one, as A1111
    pixels = ((decoded.float().cpu() + 1.0) / 2.0).clamp(0.0, 1.0)
    arrays = []
    for x in pixels:
        image = Image.fromarray((255.0 * x.permute(1, 2, 0).numpy()).astype(np.uint8))
        image = upscale_pixels(image, target.width, target.height, method)
        arrays.append(np.asarray(image).astype(np.float32) / 255.0)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).to(parts.device, parts.dtype)
    generator = torch.Generator("cpu").manual_seed(last_seed)
    with frozen_weights():
        posteriors = [parts.vae.encode(images[i:i + 1] * 2.0 - 1.0) for i in range(len(images))]
    return torch.cat([p.sample(generator) for p in posteriors]) * parts.scale_factor


def upscale_latents(parts: ModelParts, latents: torch.Tensor, opts: GenerateOptions, target: HiresTarget,
                    last_seed: int) -> torch.Tensor:
    """Step 3 of the module docstring, with the crop. Shapes: (B, C, h, w) -> (B, C, h', w') scaled latents."""
    name = upscaler_name(opts.hr_upscaler)
    f = parts.latent_factor
    if name in LATENT_UPSCALERS:
        mode, antialias = LATENT_UPSCALERS[name]
        latents = F.interpolate(latents, size=(target.height // f, target.width // f), mode=mode,
                                antialias=antialias)
    else:
        latents = _pixel_upscaled_latents(parts, latents, target, PIXEL_UPSCALERS[name], last_seed)
    tx, ty = target.truncate_x, target.truncate_y
    return latents[:, :, ty // 2:latents.shape[2] - (ty + 1) // 2, tx // 2:latents.shape[3] - (tx + 1) // 2]


def hires_txt2img(parts: ModelParts, opts: GenerateOptions, *, progress: bool = False,
                  monitor: SamplingMonitor | None = None) -> tuple[torch.Tensor, list[int]]:
    """txt2img with A1111's Hires. fix (module docstring); ``opts`` resolved and validated, ``enable_hr`` on.
    ``monitor`` sees both passes; an interrupt during the first returns its images, without the second (A1111).
    Shapes: -> images (B, 3, H', W') in [-1, 1] at the hires size (first-pass size when interrupted), B seeds."""
    parts.require_plain("txt2img")
    target = hires_target(opts, parts.latent_factor)
    noise, seeds = seeded_noise(parts, opts, opts.height, opts.width)
    latents = sample_latents(parts, opts, noise, conditioning(parts, opts), progress=progress, monitor=monitor)
    if monitor is not None and (monitor.interrupted or monitor.skipped):
        return decode(parts, latents), seeds
    latents = upscale_latents(parts, latents, opts, target, seeds[-1])
    second = second_pass_options(opts)
    h, w = (s * parts.latent_factor for s in latents.shape[2:])
    noise, _ = seeded_noise(parts, opts, h, w)
    latents = sample_latents(parts, second, noise, conditioning(parts, second), init_latents=latents,
                             hires_steps=second.steps, progress=progress, monitor=monitor)
    return decode(parts, latents), seeds

"""A1111 1.10's own algorithms for seeds and Hires. fix, written here from its code (not from ours) as references:

- ``modules/rng.py``: ``randn`` (seeds torch's global generator, as A1111 does), ``slerp``, ``ImageRNG`` (``first``:
  variation seed, seed resize, eta noise seed delta; ``next``), with A1111's "CPU" noise source;
- k-diffusion's ``sample_euler`` / ``sample_euler_ancestral`` (``k_diffusion/sampling.py``) with ``torch.randn_like``
  replaced by ``p.rng.next()``, as A1111's ``TorchHijack`` replaces it;
- ``modules/processing.py``: ``StableDiffusionProcessingTxt2Img.calculate_target_resolution`` and
  ``sample_hr_pass``, ``images_tensor_to_samples`` with the VAE's ``DiagonalGaussianDistribution.sample`` (torch's
  global generator); ``modules/images.py`` ``resize_image`` with ``modules/upscaler.py`` ``Upscaler.upscale``
  (Lanczos, Nearest); ``modules/sd_samplers_common.py`` ``setup_img2img_steps`` and
  ``sd_samplers_kdiffusion.KDiffusionSampler.sample_img2img``.

The model itself (UNet behind a CFG denoiser, VAE) is ours: these references pin the algorithms around it.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

OPT_F = 2  # A1111's opt_f (8 for SD); the tiny test VAE downsamples by 2
LATENT_MODES = {"Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
                "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
                "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False)}


def randn(seed, shape, generator=None):
    torch.manual_seed(seed)
    return torch.randn(shape, device="cpu", generator=generator)


def randn_without_seed(shape, generator=None):
    return torch.randn(shape, device="cpu", generator=generator)


def slerp(val, low, high):
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0,
                 eta_noise_seed_delta=0):
        self.shape, self.seeds, self.subseeds = shape, seeds, subseeds
        self.subseed_strength = subseed_strength
        self.seed_resize_from_h, self.seed_resize_from_w = seed_resize_from_h, seed_resize_from_w
        self.eta_noise_seed_delta = eta_noise_seed_delta
        self.generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        self.is_first = True

    def first(self):
        noise_shape = self.shape if self.seed_resize_from_h <= 0 or self.seed_resize_from_w <= 0 else (
            self.shape[0], self.seed_resize_from_h // OPT_F, self.seed_resize_from_w // OPT_F)
        xs = []
        for i, (seed, generator) in enumerate(zip(self.seeds, self.generators)):
            subnoise = None
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = 0 if i >= len(self.subseeds) else self.subseeds[i]
                subnoise = randn(subseed, noise_shape)
            if noise_shape != self.shape:
                noise = randn(seed, noise_shape)
            else:
                noise = randn(seed, self.shape, generator=generator)
            if subnoise is not None:
                noise = slerp(self.subseed_strength, noise, subnoise)
            if noise_shape != self.shape:
                x = randn(seed, self.shape, generator=generator)
                dx = (self.shape[2] - noise_shape[2]) // 2
                dy = (self.shape[1] - noise_shape[1]) // 2
                w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
                h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
                tx = 0 if dx < 0 else dx
                ty = 0 if dy < 0 else dy
                dx = max(-dx, 0)
                dy = max(-dy, 0)
                x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
                noise = x
            xs.append(noise)
        if self.eta_noise_seed_delta:
            self.generators = [torch.Generator("cpu").manual_seed(int(seed + self.eta_noise_seed_delta))
                               for seed in self.seeds]
        return torch.stack(xs)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([randn_without_seed(self.shape, generator=g) for g in self.generators])


def all_seeds(seed, subseed, subseed_strength, n):
    """``process_images_inner``'s p.all_seeds and p.all_subseeds."""
    return [int(seed) + (x if subseed_strength == 0 else 0) for x in range(n)], [int(subseed) + x for x in range(n)]


# --- k-diffusion's samplers, torch.randn_like -> rng.next() ----------------------------------------------------

def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def sample_euler_ancestral(model, x, sigmas, rng):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + rng.next() * sigma_up
    return x


def sample_euler(model, x, sigmas, rng):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigmas[i + 1] - sigmas[i])
    return x


SAMPLERS = {"Euler a": sample_euler_ancestral, "Euler": sample_euler}


# --- Hires. fix ----------------------------------------------------------------------------------------------

def target_resolution(width, height, hr_scale, hr_resize_x, hr_resize_y):
    """-> hr_upscale_to_x, hr_upscale_to_y, truncate_x, truncate_y"""
    truncate_x = truncate_y = 0
    if hr_resize_x == 0 and hr_resize_y == 0:
        return int(width * hr_scale), int(height * hr_scale), 0, 0
    if hr_resize_y == 0:
        to_x, to_y = hr_resize_x, hr_resize_x * height // width
    elif hr_resize_x == 0:
        to_x, to_y = hr_resize_y * width // height, hr_resize_y
    else:
        if width / height < hr_resize_x / hr_resize_y:
            to_x, to_y = hr_resize_x, hr_resize_x * height // width
        else:
            to_x, to_y = hr_resize_y * width // height, hr_resize_y
        truncate_x, truncate_y = (to_x - hr_resize_x) // OPT_F, (to_y - hr_resize_y) // OPT_F
    return to_x, to_y, truncate_x, truncate_y


def upscaler_upscale(img, scale, resample):
    """``Upscaler.upscale`` with Lanczos's or Nearest's ``do_upscale``."""
    dest_w, dest_h = int((img.width * scale) // 8 * 8), int((img.height * scale) // 8 * 8)
    for _ in range(3):
        shape = (img.width, img.height)
        img = img.resize((int(img.width * scale), int(img.height * scale)), resample=resample)
        if shape == (img.width, img.height):
            break
        if img.width >= dest_w and img.height >= dest_h:
            break
    if img.width != dest_w or img.height != dest_h:
        img = img.resize((int(dest_w), int(dest_h)), resample=Image.Resampling.LANCZOS)
    return img


def resize_image(im, width, height, resample):
    """``images.resize_image`` mode 0 with a named upscaler."""
    scale = max(width / im.width, height / im.height)
    if scale > 1.0:
        im = upscaler_upscale(im, scale, resample)
    if im.width != width or im.height != height:
        im = im.resize((width, height), resample=Image.Resampling.LANCZOS)
    return im


def setup_img2img_steps(denoising_strength, steps):
    """``setup_img2img_steps`` with the steps given (Hires. fix always gives them)."""
    requested_steps = steps
    steps = int(requested_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
    t_enc = requested_steps - 1
    return steps, t_enc


def hires_fix(*, vae, scale_factor, denoise, denoise_hr, get_sigmas, sampler, hr_sampler, seed, subseed,
              subseed_strength, batch_size, width, height, steps, hr_scale=2.0, hr_resize_x=0, hr_resize_y=0,
              hr_upscaler=None, hr_second_pass_steps=0, denoising_strength=0.75, ensd=0, channels=4,
              seed_resize_from_h=0, seed_resize_from_w=0, get_hr_sigmas=None):
    """txt2img + ``sample_hr_pass``: the decoded images (B, 3, H, W) in [-1, 1]. ``denoise(x, sigma)`` and
    ``denoise_hr`` are the CFG denoisers of the two passes; ``get_sigmas(name, steps)`` the schedule
    (``get_hr_sigmas`` the second pass's, when its schedule type differs: ``p.hr_scheduler``)."""
    seeds, subseeds = all_seeds(seed, subseed, subseed_strength, batch_size)
    extras = dict(subseeds=subseeds, subseed_strength=subseed_strength, seed_resize_from_h=seed_resize_from_h,
                  seed_resize_from_w=seed_resize_from_w, eta_noise_seed_delta=ensd)
    to_x, to_y, truncate_x, truncate_y = target_resolution(width, height, hr_scale, hr_resize_x, hr_resize_y)
    # first pass
    rng = ImageRNG((channels, height // OPT_F, width // OPT_F), seeds, **extras)
    sigmas = get_sigmas(sampler, steps)
    samples = SAMPLERS[sampler](denoise, rng.next() * sigmas[0], sigmas, rng)
    # upscale
    if hr_upscaler is None or hr_upscaler in LATENT_MODES:
        mode, antialias = LATENT_MODES[hr_upscaler or "Latent"]
        samples = torch.nn.functional.interpolate(samples, size=(to_y // OPT_F, to_x // OPT_F), mode=mode,
                                                  antialias=antialias)
    else:
        resample = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}[hr_upscaler]
        decoded = torch.stack([vae.decode(samples[i:i + 1] / scale_factor)[0] for i in range(len(samples))])
        lowres = torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0)
        batch_images = []
        for x_sample in lowres:
            x_sample = (255. * np.moveaxis(x_sample.cpu().numpy(), 0, 2)).astype(np.uint8)
            image = resize_image(Image.fromarray(x_sample), to_x, to_y, resample)
            batch_images.append(np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0))
        image = torch.from_numpy(np.array(batch_images)) * 2 - 1
        latents = []
        for img in image:  # get_first_stage_encoding(encode_first_stage(img)): posterior.sample(), global randn
            posterior = vae.encode(img[None])
            latents.append((posterior.mean + posterior.std * torch.randn(posterior.mean.shape))[0] * scale_factor)
        samples = torch.stack(latents)
    samples = samples[:, :, truncate_y // 2:samples.shape[2] - (truncate_y + 1) // 2,
                      truncate_x // 2:samples.shape[3] - (truncate_x + 1) // 2]
    # second pass: sample_img2img
    rng = ImageRNG(samples.shape[1:], seeds, **extras)
    noise = rng.next()
    total, t_enc = setup_img2img_steps(denoising_strength, hr_second_pass_steps or steps)
    sigma_sched = (get_hr_sigmas or get_sigmas)(hr_sampler, total)[total - t_enc - 1:]
    xi = samples + noise * sigma_sched[0]
    samples = SAMPLERS[hr_sampler](denoise_hr, xi, sigma_sched, rng)
    return vae.decode(samples / scale_factor)

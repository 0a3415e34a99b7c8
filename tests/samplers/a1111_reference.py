"""The A1111 1.10 reference: k-diffusion's sampler functions behind ``CompVisDenoiser(quantize=False)``, driven as
A1111's ``KDiffusionSampler.sample`` drives them (``modules/sd_samplers_kdiffusion.py``: ``get_sigmas``,
``create_noise_sampler``, ``initialize``, ``sample``; ``CFGDenoiser.forward`` / ``combine_denoised``;
``TorchHijack.randn_like`` with ``rng.ImageRNG``'s per-image CPU generators), the schedule types of
``modules/sd_schedulers.py``, Restart from ``modules/sd_samplers_extra.py``, and the 8-bit conversion of
``processing.py`` (``(255. * x).astype(np.uint8)``).

k-diffusion's package ``__init__`` imports torchvision, so its ``sampling.py`` and ``external.py`` are loaded by
file path, with ``utils.append_dims`` (the one helper they use) provided here.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from pathlib import Path

import numpy as np
import torch
from scipy import stats


def _load_k_diffusion():
    spec = importlib.util.find_spec("k_diffusion")  # finds the package without running its __init__
    root = Path(spec.submodule_search_locations[0])
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(root)]
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    package.utils = utils
    sys.modules.setdefault("k_diffusion", package)
    sys.modules.setdefault("k_diffusion.utils", utils)
    modules = {}
    for name in ("sampling", "external"):
        module_spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[f"k_diffusion.{name}"] = module
        setattr(package, name, module)
        module_spec.loader.exec_module(module)
        modules[name] = module
    return modules["sampling"], modules["external"]


sampling, external = _load_k_diffusion()
REAL_TORCH = sampling.torch


class _CompVisModel(torch.nn.Module):
    """What CompVisDenoiser wraps: ``alphas_cumprod`` (float32) and ``apply_model(x, t, cond)`` -> eps."""

    def __init__(self, unet, alphas_cumprod):
        super().__init__()
        self.unet = unet
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())

    def apply_model(self, x, t, cond):
        return self.unet(x, t, cond)


class CFGDenoiser:
    """A1111's CFGDenoiser for plain prompts: one batch [cond; uncond], denoised = uncond + (cond - uncond) * s."""

    def __init__(self, model_wrap):
        self.inner_model = model_wrap

    def __call__(self, x, sigma, cond, uncond, cond_scale):
        B = x.shape[0]
        x_out = self.inner_model(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond]))
        denoised_uncond = x_out[-B:]
        return denoised_uncond + (x_out[:B] - denoised_uncond) * cond_scale


class TorchHijack:
    """k-diffusion's ``torch`` with ``randn_like`` drawing from each image's own CPU generator."""

    def __init__(self, generators):
        self.generators = generators

    def __getattr__(self, item):
        return getattr(REAL_TORCH, item)

    def randn_like(self, x):
        return torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in self.generators]).to(x)


# --- modules/sd_schedulers.py ----------------------------------------------------------------------------

def _uniform(n, sigma_min, sigma_max, inner_model):
    return inner_model.get_sigmas(n)


def _sgm_uniform(n, sigma_min, sigma_max, inner_model):
    start, end = inner_model.sigma_to_t(torch.tensor(sigma_max)), inner_model.sigma_to_t(torch.tensor(sigma_min))
    sigs = [inner_model.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    return torch.FloatTensor(sigs + [0.0])


def _kl_optimal(n, sigma_min, sigma_max):
    alpha_min, alpha_max = torch.arctan(torch.tensor(sigma_min)), torch.arctan(torch.tensor(sigma_max))
    step_indices = torch.arange(n + 1)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


def _align_your_steps(n, sigma_min, sigma_max):
    sigmas = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
    if n != len(sigmas):
        xs, ys = np.linspace(0, 1, len(sigmas)), np.log(sigmas[::-1])
        sigmas = np.append(np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy(), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas)


def _simple(n, sigma_min, sigma_max, inner_model):
    ss = len(inner_model.sigmas) / n
    return torch.FloatTensor([float(inner_model.sigmas[-(1 + int(x * ss))]) for x in range(n)] + [0.0])


def _normal(n, sigma_min, sigma_max, inner_model):
    start, end = inner_model.sigma_to_t(torch.tensor(sigma_max)), inner_model.sigma_to_t(torch.tensor(sigma_min))
    return torch.FloatTensor([inner_model.t_to_sigma(ts) for ts in torch.linspace(start, end, n)] + [0.0])


def _ddim(n, sigma_min, sigma_max, inner_model):
    sigs, ss, x = [], max(len(inner_model.sigmas) // n, 1), 1
    while x < len(inner_model.sigmas):
        sigs += [float(inner_model.sigmas[x])]
        x += ss
    return torch.FloatTensor(sigs[::-1] + [0.0])


def _beta(n, sigma_min, sigma_max, inner_model, alpha=0.6, beta=0.6):
    timesteps = [stats.beta.ppf(x, alpha, beta) for x in 1 - np.linspace(0, 1, n)]
    return torch.FloatTensor([sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps] + [0.0])


SCHEDULERS = {  # label: (function, needs inner model)
    "Uniform": (_uniform, True), "Karras": (sampling.get_sigmas_karras, False),
    "Exponential": (sampling.get_sigmas_exponential, False),
    "Polyexponential": (sampling.get_sigmas_polyexponential, False), "SGM Uniform": (_sgm_uniform, True),
    "KL Optimal": (_kl_optimal, False), "Align Your Steps": (_align_your_steps, False), "Simple": (_simple, True),
    "Normal": (_normal, True), "DDIM": (_ddim, True), "Beta": (_beta, True),
}

# --- modules/sd_samplers_kdiffusion.py (1.10) ---------------------------------------------------------------

SAMPLERS = {  # name: (k-diffusion function, options) as samplers_k_diffusion lists them
    "DPM++ 2M": ("sample_dpmpp_2m", {"scheduler": "karras"}),
    "DPM++ SDE": ("sample_dpmpp_sde", {"scheduler": "karras", "brownian_noise": True}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {"scheduler": "exponential", "brownian_noise": True}),
    "DPM++ 2M SDE Heun": ("sample_dpmpp_2m_sde", {"scheduler": "exponential", "brownian_noise": True,
                                                  "solver_type": "heun"}),
    "DPM++ 2S a": ("sample_dpmpp_2s_ancestral", {"scheduler": "karras"}),
    "DPM++ 3M SDE": ("sample_dpmpp_3m_sde", {"scheduler": "exponential", "discard_next_to_last_sigma": True,
                                            "brownian_noise": True}),
    "Euler a": ("sample_euler_ancestral", {}),
    "Euler": ("sample_euler", {}),
    "LMS": ("sample_lms", {}),
    "Heun": ("sample_heun", {}),
    "DPM2": ("sample_dpm_2", {"scheduler": "karras", "discard_next_to_last_sigma": True}),
    "DPM2 a": ("sample_dpm_2_ancestral", {"scheduler": "karras", "discard_next_to_last_sigma": True}),
    "DPM fast": ("sample_dpm_fast", {}),
    "DPM adaptive": ("sample_dpm_adaptive", {}),
    "Restart": ("restart", {"scheduler": "karras"}),
    "LCM": ("lcm", {}),  # modules/sd_samplers_lcm.py: samplers_data_lcm
}
LABELS = {"karras": "Karras", "exponential": "Exponential"}


def get_sigmas(model_wrap, name: str, scheduler: str, steps: int, always_discard: bool = False) -> torch.Tensor:
    """``KDiffusionSampler.get_sigmas``; ``always_discard``: ``opts.always_discard_next_to_last_sigma``."""
    options = SAMPLERS[name][1]
    discard = options.get("discard_next_to_last_sigma", False) or always_discard
    steps += 1 if discard else 0
    if scheduler == "Automatic":
        scheduler = LABELS.get(options.get("scheduler"))
    m_sigma_min, m_sigma_max = model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item()
    if scheduler is None:
        sigmas = model_wrap.get_sigmas(steps)
    else:
        fn, inner = SCHEDULERS[scheduler]
        kwargs = {"inner_model": model_wrap} if inner else {}
        sigmas = fn(n=steps, sigma_min=m_sigma_min, sigma_max=m_sigma_max, **kwargs)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1., restart_list=None):
    """``modules/sd_samplers_extra.restart_sampler`` (A1111 1.10)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])

    def heun_step(x, old_sigma, new_sigma, second_order=True):
        denoised = model(x, old_sigma * s_in, **extra_args)
        d = sampling.to_d(x, old_sigma, denoised)
        dt = new_sigma - old_sigma
        if new_sigma == 0 or not second_order:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, new_sigma * s_in, **extra_args)
            d_2 = sampling.to_d(x_2, new_sigma, denoised_2)
            x = x + (d + d_2) / 2 * dt
        return x

    steps = sigmas.shape[0] - 1
    if restart_list is None:
        if steps >= 20:
            restart_steps, restart_times = 9, 1
            if steps >= 36:
                restart_steps, restart_times = steps // 4, 2
            sigmas = sampling.get_sigmas_karras(steps - restart_steps * restart_times, sigmas[-2].item(),
                                                sigmas[0].item(), device=sigmas.device)
            restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
        else:
            restart_list = {}
    restart_list = {int(torch.argmin(abs(sigmas - key), dim=0)): value for key, value in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restart_list:
            restart_steps, restart_times, restart_max = restart_list[i + 1]
            min_idx, max_idx = i + 1, int(torch.argmin(abs(sigmas - restart_max), dim=0))
            if max_idx < min_idx:
                sigma_restart = sampling.get_sigmas_karras(restart_steps, sigmas[min_idx].item(),
                                                           sigmas[max_idx].item(), device=sigmas.device)[:-1]
                while restart_times > 0:
                    restart_times -= 1
                    step_list.extend(zip(sigma_restart[:-1], sigma_restart[1:]))
    last_sigma = None
    for old_sigma, new_sigma in step_list:
        if last_sigma is None:
            last_sigma = old_sigma
        elif last_sigma < old_sigma:
            x = x + sampling.torch.randn_like(x) * s_noise * (old_sigma ** 2 - last_sigma ** 2) ** 0.5
        x = heun_step(x, old_sigma, new_sigma)
        last_sigma = new_sigma
    return x


class LCMCompVisDenoiser(external.DiscreteEpsDDPMDenoiser):
    """``modules/sd_samplers_lcm.LCMCompVisDenoiser`` (A1111 1.10)."""

    def __init__(self, model):
        timesteps, original_timesteps = 1000, 50
        self.skip_steps = timesteps // original_timesteps
        alphas_cumprod_valid = torch.zeros((original_timesteps), dtype=torch.float32)
        for x in range(original_timesteps):
            alphas_cumprod_valid[original_timesteps - 1 - x] = model.alphas_cumprod[timesteps - 1 - x * self.skip_steps]
        super().__init__(model, alphas_cumprod_valid, quantize=None)

    def get_sigmas(self, n=None):
        if n is None:
            return sampling.append_zero(self.sigmas.flip(0))
        start, end = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return sampling.append_zero(self.t_to_sigma(torch.linspace(start, end, n)))

    def sigma_to_t(self, sigma, quantize=None):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        t = torch.clamp(((timestep - (self.skip_steps - 1)) / self.skip_steps).float(), min=0,
                        max=(len(self.sigmas) - 1))
        return super().t_to_sigma(t)

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def get_scaled_out(self, sigma, output, input):
        sigma_data = 0.5
        scaled_timestep = self.sigma_to_t(sigma)[:, None, None, None] * 10.0
        c_skip = sigma_data**2 / (scaled_timestep**2 + sigma_data**2)
        c_out = scaled_timestep / (scaled_timestep**2 + sigma_data**2) ** 0.5
        return c_out * output + c_skip * input

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = [x[:, None, None, None] for x in self.get_scalings(sigma)]
        eps = self.get_eps(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return self.get_scaled_out(sigma, input + eps * c_out, input)


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """``modules/sd_samplers_lcm.sample_lcm``."""
    extra_args = {} if extra_args is None else extra_args
    noise_sampler = sampling.default_noise_sampler(x) if noise_sampler is None else noise_sampler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        x = denoised
        if sigmas[i + 1] > 0:
            x += sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def a1111_txt2img_latents(unet, alphas_cumprod, name: str, scheduler: str, steps: int, seeds: list[int],
                          shape: tuple[int, int, int], cond, uncond, cfg_scale: float,
                          always_discard: bool = False) -> torch.Tensor:
    """``KDiffusionSampler.sample`` for txt2img: latents (B, C, h, w) before the VAE."""
    model = _CompVisModel(unet, alphas_cumprod)
    model_wrap = LCMCompVisDenoiser(model) if name == "LCM" else external.CompVisDenoiser(model, quantize=False)
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    x = torch.cat([torch.randn((1, *shape), generator=g) for g in generators])  # rng.ImageRNG.first()
    sigmas = get_sigmas(model_wrap, name, scheduler, steps, always_discard)
    x = x * sigmas[0]
    funcname, options = SAMPLERS[name]
    func = {"restart": restart_sampler, "lcm": sample_lcm}.get(funcname) or getattr(sampling, funcname)
    sampling.torch = TorchHijack(generators)
    try:
        parameters = inspect.signature(func).parameters
        kwargs = {}
        if "eta" in parameters:
            kwargs["eta"] = 1.0  # opts.eta_ancestral
        if "solver_type" in options:
            kwargs["solver_type"] = options["solver_type"]
        if "sigma_min" in parameters:
            kwargs["sigma_min"], kwargs["sigma_max"] = model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item()
            if "n" in parameters:
                kwargs["n"] = steps
        else:
            kwargs["sigmas"] = sigmas
        if options.get("brownian_noise"):
            sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
            kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seeds)
        denoiser = CFGDenoiser(model_wrap)
        with torch.no_grad():
            return func(lambda x, sigma, **extra: denoiser(x, sigma, **extra), x,
                        extra_args={"cond": cond, "uncond": uncond, "cond_scale": cfg_scale}, disable=True, **kwargs)
    finally:
        sampling.torch = REAL_TORCH


def a1111_pixels(images: torch.Tensor) -> np.ndarray:
    """``processing``: clamp((x + 1) / 2), then (255. * x).astype(np.uint8). Shapes: (B, 3, H, W) -> (B, H, W, 3)."""
    x = torch.clamp((images.float() + 1.0) / 2.0, min=0.0, max=1.0)
    return (255.0 * np.moveaxis(x.cpu().numpy(), 1, 3)).astype(np.uint8)

"""Samplers: functions ``sample_x(denoiser, x, sigmas, *, cond, noise=None, callback=None, **options) -> x``
that see only ``denoised = denoiser(x, sigma, cond)`` and a descending sigma schedule, and the registry that
names them the way users know them (``get_sampler("DPM++ 2M Karras")``)."""
from nanoldm.samplers.ddim import sample_ddim
from nanoldm.samplers.ddpm import sample_ddpm
from nanoldm.samplers.dpmpp import sample_dpmpp_2m
from nanoldm.samplers.euler import ancestral_step, sample_euler, sample_euler_ancestral
from nanoldm.samplers.heun import sample_heun
from nanoldm.samplers.registry import SAMPLER_NAMES, SAMPLERS, SamplerSpec, get_sampler
from nanoldm.samplers.sigmas import karras_sigmas, sigmas_at_timesteps

__all__ = [
    "SAMPLERS", "SAMPLER_NAMES", "SamplerSpec", "ancestral_step", "get_sampler", "karras_sigmas", "sample_ddim",
    "sample_ddpm", "sample_dpmpp_2m", "sample_euler", "sample_euler_ancestral", "sample_heun", "sigmas_at_timesteps",
]

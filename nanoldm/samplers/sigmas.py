"""Noise-level schedules for sampling: descending (steps + 1,) float32 tensors, the last entry the level the
sampler ends on (0 for a clean sample)."""
from __future__ import annotations

import functools

import torch

from nanoldm.diffusion.schedule import NoiseSchedule


def sigmas_at_timesteps(schedule: NoiseSchedule, timesteps: torch.Tensor, final_sigma: float = 0.0) -> torch.Tensor:
    """The "Normal" schedule: the training schedule's sigmas at the given (descending, possibly fractional)
    timesteps, then ``final_sigma``. Between integer timesteps sigma is interpolated linearly, as diffusers does
    (k-diffusion interpolates log sigma, so A1111's Euler differs slightly from diffusers' at fractional timesteps).

    Shapes: timesteps (steps,) -> (steps + 1,).
    """
    sigmas = schedule.t_to_sigma(timesteps, log_space=False)
    return torch.cat([sigmas, sigmas.new_tensor([final_sigma])]).float()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0 .. n-1, which spends more steps at low noise as rho grows; then 0. Shapes: -> (steps + 1,)."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def per_schedule(table):
    """Decorate ``table(sigmas, *options)``, a function of the noise levels alone (a solver's weights), so a
    repeated schedule reuses its result: cached by the levels' values and dtype (the last 16 schedules). The
    function gets the levels as a CPU tensor of that dtype; what it returns is shared, so callers only read it."""
    @functools.lru_cache(maxsize=16)
    def cached(levels: tuple[float, ...], dtype: torch.dtype, *options):
        return table(torch.tensor(levels, dtype=dtype), *options)

    @functools.wraps(table)
    def lookup(sigmas: torch.Tensor, *options):
        return cached(tuple(sigmas.detach().cpu().tolist()), sigmas.dtype, *options)

    lookup.cache_clear = cached.cache_clear
    return lookup

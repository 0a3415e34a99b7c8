"""Two of ComfyUI's own multistep samplers (``comfy/k_diffusion/sampling.py``), each with an ancestral and/or a
CFG++ form (``nanoldm.samplers.cfg_pp`` explains CFG++):

- ``res_multistep``: the second-order multistep exponential integrator of Zhang et al. 2023 ("Improved order
  analysis and design of exponential integrator for diffusion models sampling", the RES solvers), in
  lambda = -log(sigma); ``res_multistep_ancestral`` steps down to the ancestral sigma_down and adds fresh noise.
- ``gradient_estimation``: Euler plus a correction from the change of the slope between steps (Permenter & Yuan
  2024, "Interpreting and Improving Diffusion Models from an Optimization Perspective"), gamma = 2.

ComfyUI's RES weights use c2 = (lambda(sigma_prev) - lambda(old sigma_down)) / h, which is negative (the
previous level lies behind the current one); it is kept as ComfyUI has it, since its images are the reference.
"""
from __future__ import annotations


import torch

from nanoldm.samplers.euler import ancestral_step
from nanoldm.samplers.sigmas import per_schedule


def _denoise(denoiser, x, sigma, cond, cfg_pp: bool):
    """(D, the estimate the solver steps along): D_u for CFG++, D itself otherwise."""
    if cfg_pp:
        return denoiser.with_uncond(x, sigma, cond)
    denoised = denoiser(x, sigma, cond)
    return denoised, denoised


@per_schedule
def _res_steps(sigmas: torch.Tensor, eta: float) -> list[tuple]:
    """Per step: (sigma_down, sigma_down - sigma, sigma_up, the second-order factors (e^-h, h, b1, b2) or None
    for an Euler step). They depend on the noise levels alone, so a repeated schedule reuses them."""
    steps, old_sigma_down = [], None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta) if eta else (sigma_next, 0.0)
        second = None
        if sigma_down != 0 and i > 0:
            t, t_next = -sigma.log(), -sigma_down.log()
            h = t_next - t
            c2 = (-sigmas[i - 1].log() + old_sigma_down.log()) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            second = (torch.exp(-h), h, b1, b2)
        steps.append((sigma_down, sigma_down - sigma, sigma_up, second))
        old_sigma_down = sigma_down
    return steps


def sample_res_multistep(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 0.0,
                         cfg_pp: bool = False):
    """ComfyUI's ``res_multistep`` (eta 0), ``res_multistep_ancestral`` (eta 1) and their ``_cfg_pp`` forms:
    the first step and the step to sigma = 0 are Euler, the others use the last two estimates; with eta > 0
    each step ends with fresh ``noise()`` of std sigma_up.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    old = None
    plan = _res_steps(sigmas, float(eta))
    for i, (sigma_down, dt, sigma_up, second) in enumerate(plan):
        denoised, estimate = _denoise(denoiser, x, sigmas[i], cond, cfg_pp)
        if second is None:  # Euler, from D (CFG++: landing on D, D_u's direction)
            d = (x - estimate) / sigmas[i]
            x = denoised + d * sigma_down if cfg_pp else x + d * dt
        else:
            decay, h, b1, b2 = second
            if cfg_pp:
                x = x + (denoised - estimate)
            x = decay * x + h * (b1 * estimate + b2 * old)
        if sigmas[i + 1] > 0 and eta > 0:
            x = x + noise() * sigma_up
        old = estimate
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_gradient_estimation(denoiser, x, sigmas, *, cond, noise=None, callback=None, gamma: float = 2.0,
                               cfg_pp: bool = False):
    """ComfyUI's ``gradient_estimation`` (and ``_cfg_pp``): an Euler step, then (gamma - 1) times the change of
    the slope since the previous step, over the same step. The step to sigma = 0 returns D. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    old_d = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, estimate = _denoise(denoiser, x, sigma, cond, cfg_pp)
        d = (x - estimate) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = denoised
        else:
            x = denoised + d * sigma_next if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (gamma - 1) * (d - old_d) * dt
        old_d = d
        if callback is not None:
            callback(i, x, denoised)
    return x

"""CFG++ (Chung et al. 2024, "CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models"), as
ComfyUI runs it (``comfy/k_diffusion/sampling.py``: ``sample_euler_ancestral_cfg_pp``, ``sample_euler_cfg_pp``,
``sample_dpmpp_2s_ancestral_cfg_pp``, ``sample_dpmpp_2m_cfg_pp``).

Ordinary guidance steps along the guided estimate D = D_u + w (D_c - D_u). CFG++ keeps the guided estimate as the
point it lands on but takes the direction back to noise from the unguided one, D_u: an Euler step to sigma_next is
x_next = D + sigma_next (x - D_u) / sigma instead of D + sigma_next (x - D) / sigma. The guidance scales meant for
it are small (about 0.5 to 2). The denoiser must offer ``with_uncond(x, sigma, cond) -> (D, D_u)``
(``Denoiser.with_uncond``). ComfyUI's alpha_s / alpha_t factors (the half-logSNR form it shares with flow models)
are 1 up to rounding for these models and are left out.
"""
from __future__ import annotations

import torch

from nanoldm.samplers.euler import ancestral_step


def sample_euler_ancestral_cfg_pp(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0):
    """Euler ancestral with CFG++: land on D plus sigma_down times the unguided noise direction, then fresh
    ``noise()`` of std sigma_up (eta = 0: ``euler_cfg_pp``, no noise). The step to sigma = 0 returns D.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoiser.with_uncond(x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta) if eta else (sigma_next, 0.0)
            x = denoised + sigma_down * ((x - uncond) / sigma)
            if eta > 0:
                x = x + noise() * sigma_up
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_euler_cfg_pp(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Euler with CFG++ (``euler_cfg_pp``): the ancestral form with eta = 0. ``noise`` is unused."""
    return sample_euler_ancestral_cfg_pp(denoiser, x, sigmas, cond=cond, callback=callback, eta=0.0)


def sample_dpmpp_2s_ancestral_cfg_pp(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0):
    """DPM-Solver++(2S) ancestral with CFG++: the two-stage step down to sigma_down runs on the unguided
    estimates (the midpoint's guided output is not used), fresh ``noise()`` up to sigma_next, and then the
    first stage's guidance D - D_u is added to x, after the noise, on every step.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised, uncond = denoiser.with_uncond(x, sigma, cond)
        guidance = denoised - uncond
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + (x - uncond) / sigma * (sigma_down - sigma)
        else:
            t, t_next = -sigma.log(), -sigma_down.log()  # lambda = -log(sigma)
            h = t_next - t
            t_mid = t + h / 2
            x_mid = (torch.exp(-t_mid) / torch.exp(-t)) * x - torch.expm1(-h / 2) * uncond
            _, uncond_mid = denoiser.with_uncond(x_mid, torch.exp(-t_mid), cond)
            x = (torch.exp(-t_next) / torch.exp(-t)) * x - torch.expm1(-h) * uncond_mid
        if sigmas[i + 1] > 0:
            x = x + noise() * sigma_up
        x = x + guidance
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpmpp_2m_cfg_pp(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """DPM-Solver++(2M) with CFG++: x_next = D + e^-h x - e^-h D_u, plus the second-order term built from D and
    the previous step's D_u (first order on the first step and the step to sigma = 0, which returns D).
    ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    old_uncond = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoiser.with_uncond(x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            t, t_next = -sigma.log(), -sigma_next.log()
            h = t_next - t
            mix = -torch.exp(-h) * uncond
            if old_uncond is not None:
                r = (t + sigmas[i - 1].log()) / h  # h_last / h
                mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
            x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
        if callback is not None:
            callback(i, x, denoised)
    return x

"""Euler and Euler ancestral samplers on the probability-flow ODE in sigma space (Karras et al. 2022).

With x = x0 + sigma * eps the ODE is dx/dsigma = (x - D(x, sigma)) / sigma, D the denoiser: the slope is the
noise the denoiser sees in x.
"""
from __future__ import annotations

import torch


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """Split the move sigma -> sigma_next into a deterministic step down to ``sigma_down`` and fresh noise of
    std ``sigma_up``, with sigma_down^2 + sigma_up^2 = sigma_next^2. eta = 1 gives the DDPM posterior's
    noise (Ho et al. 2020), eta = 0 the deterministic ODE step (DDIM; Song et al. 2021 eq. 16 in sigma space).
    """
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2).sqrt())
    sigma_down = (sigma_next**2 - sigma_up**2).sqrt()
    return sigma_down, sigma_up


def sample_euler(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Euler's method (Karras et al. 2022, algorithm 2 without churn). ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        d = (x - denoised) / sigmas[i]  # 1. slope dx/dsigma
        x = x + d * (sigmas[i + 1] - sigmas[i])  # 2. straight line to the next noise level
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_euler_ancestral(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0):
    """Euler ancestral: an Euler step down to sigma_down, then fresh noise up to sigma_next (k-diffusion's
    ``sample_euler_ancestral``; the split is DDIM's, Song et al. 2021 eq. 16, rewritten in sigma space).

    ``noise()`` returns fresh N(0, I) shaped like x (default ``torch.randn_like``); it is called once per step
    that adds noise (none when eta = 0, none on a final step to sigma 0).
    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)  # 1. split the step
        d = (x - denoised) / sigmas[i]  # 2. Euler step to sigma_down
        x = x + d * (sigma_down - sigmas[i])
        if sigma_up > 0:  # 3. back up to sigma_next with fresh noise
            x = x + noise() * sigma_up
        if callback is not None:
            callback(i, x, denoised)
    return x

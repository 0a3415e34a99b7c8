"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"), multistep second order, in sigma space.

In lambda = -log(sigma) (half the log-SNR) the exact solution of the ODE from sigma to sigma_next is
x_next = (sigma_next / sigma) x + sigma_next * integral of e^lambda D dlambda; DPM-Solver++ approximates D in that
integral by a polynomial through the denoised outputs of the current and the previous step.
"""
from __future__ import annotations

import torch

from nanoldm.samplers.euler import ancestral_step


def sample_dpmpp_2m(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022, algorithm 2; k-diffusion's ``sample_dpmpp_2m``): one denoiser call per
    step; the first step and a final step to sigma = 0 are first order (DPM-Solver++(1), i.e. DDIM).
    ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        if sigma_next == 0:
            x = denoised  # the first-order step to sigma = 0 lands on the denoised sample
        else:
            h = torch.log(sigma / sigma_next)  # 1. step size in lambda = -log(sigma)
            if old_denoised is None:
                d = denoised  # 2a. first order: D constant over the step
            else:  # 2b. second order: D extrapolated linearly from the previous step (eq. 10, r = h_last / h)
                r = torch.log(sigmas[i - 1] / sigma) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - torch.expm1(-h) * d  # 3. exact integration of the linear part
        old_denoised = denoised
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpmpp_2s_ancestral(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0):
    """Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022, algorithm 1 in the data-prediction form,
    r = 1/2; k-diffusion's ``sample_dpmpp_2s_ancestral``): a single-step second-order move down to sigma_down,
    then fresh noise ``noise()`` up to sigma_next. Two denoiser calls per step but the last (Euler to 0).

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = denoiser(x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], eta)
        if sigma_down == 0:
            x = x + (x - denoised) / sigma * (sigma_down - sigma)
        else:
            h = torch.log(sigma / sigma_down)  # 1. step size in lambda = -log(sigma)
            sigma_mid = sigma * torch.exp(-h / 2)  # 2. first order to the midpoint in lambda
            x_mid = (sigma_mid / sigma) * x - torch.expm1(-h / 2) * denoised
            denoised_mid = denoiser(x_mid, sigma_mid, cond)
            x = (sigma_down / sigma) * x - torch.expm1(-h) * denoised_mid  # 3. the whole step with D there
        if sigmas[i + 1] > 0:
            x = x + noise() * sigma_up
        if callback is not None:
            callback(i, x, denoised)
    return x

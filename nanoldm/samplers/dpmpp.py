"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models"), multistep second order, in sigma space.

In lambda = -log(sigma) (half the log-SNR) the exact solution of the ODE from sigma to sigma_next is
x_next = (sigma_next / sigma) x + sigma_next * integral of e^lambda D dlambda; DPM-Solver++ approximates D in that
integral by a polynomial through the denoised outputs of the current and the previous step.
"""
from __future__ import annotations

import torch


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

"""DPM2 and DPM2 ancestral: k-diffusion's second-order samplers "inspired by DPM-Solver-2" (Lu et al. 2022,
algorithm 1 with r = 1/2) on the sigma-space ODE of Karras et al. 2022: the slope is taken again at the geometric
midpoint of the step and used for the whole step."""
from __future__ import annotations

from nanoldm.samplers.euler import ancestral_step


def _midpoint_step(denoiser, x, d, sigma, sigma_to, cond):
    """x moved from sigma to sigma_to with the slope at sigma_mid = sqrt(sigma * sigma_to)."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_mid = x + d * (sigma_mid - sigma)  # 1. Euler half step (in log sigma)
    d_mid = (x_mid - denoiser(x_mid, sigma_mid, cond)) / sigma_mid  # 2. slope there
    return x + d_mid * (sigma_to - sigma)  # 3. the whole step with it


def sample_dpm_2(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """DPM2: two denoiser calls per step; the last step to sigma = 0 is Euler. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        d = (x - denoised) / sigma
        x = x + d * (sigma_next - sigma) if sigma_next == 0 else _midpoint_step(denoiser, x, d, sigma, sigma_next, cond)
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpm_2_ancestral(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0):
    """DPM2 down to sigma_down, then fresh noise ``noise()`` up to sigma_next (the split of ``ancestral_step``).

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = denoiser(x, sigma, cond)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], eta)
        d = (x - denoised) / sigma
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            x = _midpoint_step(denoiser, x, d, sigma, sigma_down, cond) + noise() * sigma_up
        if callback is not None:
            callback(i, x, denoised)
    return x

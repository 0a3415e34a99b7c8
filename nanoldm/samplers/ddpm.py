"""DDPM ancestral sampling (Ho et al. 2020, algorithm 2)."""
from __future__ import annotations

from nanoldm.samplers.euler import sample_euler_ancestral


def sample_ddpm(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Sample x_prev ~ q(x_prev | x_t, x0 = D(x_t)), the forward process' posterior (Ho et al. 2020 eq. 6-7,
    with beta = 1 - ab_t / ab_prev when steps are skipped, the "fixed small" variance).

    That posterior is DDIM's update with eta = 1 (Song et al. 2021, sec. 4.1), which in sigma space is Euler
    ancestral with eta = 1: mean x0 + sigma_down eps, variance sigma_up^2 (see ``ancestral_step``).
    ``noise()`` is called once per step except a final step to sigma = 0.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    return sample_euler_ancestral(denoiser, x, sigmas, cond=cond, noise=noise, callback=callback, eta=1.0)

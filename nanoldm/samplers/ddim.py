"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models")."""
from __future__ import annotations

from nanoldm.samplers.euler import sample_euler_ancestral


def sample_ddim(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 0.0):
    """DDIM with stochasticity ``eta`` (0: deterministic).

    DDIM's update (Song et al. 2021, eq. 12) is
        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - s^2) eps + s z,
        s^2 = eta^2 (1 - ab_prev) / (1 - ab_t) (1 - ab_t / ab_prev).
    Divided by sqrt(ab_prev), with ab = 1 / (1 + sigma^2), this is x0 + sigma_down eps + sigma_up z with exactly
    the ``ancestral_step`` split of sigma_prev, so DDIM in sigma space is Euler ancestral with eta (plain Euler when
    eta = 0; Karras et al. 2022, sec. 3). What makes it "DDIM" is its schedule (see the registry).

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    return sample_euler_ancestral(denoiser, x, sigmas, cond=cond, noise=noise, callback=callback, eta=eta)

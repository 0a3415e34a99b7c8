"""Heun's second-order sampler (Karras et al. 2022)."""
from __future__ import annotations


def sample_heun(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Heun's method on dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, algorithm 1 with the
    deterministic schedule of the caller): an Euler step, then the average of the slopes at both ends.
    The last step to sigma = 0 stays an Euler step (the slope is undefined there). Two denoiser calls per step
    but the last. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        d = (x - denoised) / sigma  # 1. slope at the start
        x_euler = x + d * (sigma_next - sigma)  # 2. Euler predictor
        if sigma_next == 0:
            x = x_euler
        else:  # 3. trapezoidal corrector with the slope at the predicted point
            d_next = (x_euler - denoiser(x_euler, sigma_next, cond)) / sigma_next
            x = x + (d + d_next) / 2 * (sigma_next - sigma)
        if callback is not None:
            callback(i, x, denoised)
    return x

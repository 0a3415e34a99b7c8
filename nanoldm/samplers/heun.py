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


def sample_heunpp2(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Heun++ (ComfyUI's ``heunpp2``, from the sd-webui-samplers-scheduler extension): an Euler predictor to the
    next level and, while two more levels remain, a second one to the level after; the slopes are weighed by
    their noise levels over 3 sigma_0 (w_next = sigma_next / (3 sigma_0), w_after = sigma_after / (3 sigma_0),
    the rest to the start). With one level left it is Heun with weights over 2 sigma_0, and the last step, to
    the schedule's end, is Euler. Up to three denoiser calls per step. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        d = (x - denoised) / sigma
        dt = sigma_next - sigma
        if sigma_next == end:
            x = x + d * dt
        else:
            x_next = x + d * dt
            d_next = (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next
            if sigmas[i + 2] == end:
                w_next = sigma_next / (2 * sigmas[0])
                x = x + (d * (1 - w_next) + d_next * w_next) * dt
            else:
                sigma_after = sigmas[i + 2]
                x_after = x_next + d_next * (sigma_after - sigma_next)
                d_after = (x_after - denoiser(x_after, sigma_after, cond)) / sigma_after
                w_next, w_after = sigma_next / (3 * sigmas[0]), sigma_after / (3 * sigmas[0])
                x = x + ((1 - w_next - w_after) * d + w_next * d_next + w_after * d_after) * dt
        if callback is not None:
            callback(i, x, denoised)
    return x

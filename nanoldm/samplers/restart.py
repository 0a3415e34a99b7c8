"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as A1111 1.10 runs
it (``modules/sd_samplers_extra.restart_sampler``): Heun steps, and at sigma ~ 0.1 a jump back up to sigma ~ 2
with fresh noise, re-descended on a Karras schedule, to contract accumulated errors."""
from __future__ import annotations

import torch

from nanoldm.samplers.sigmas import karras_sigmas


def restart_plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs Restart walks. With steps >= 20 the main schedule is re-made as Karras with
    steps - k * n points (k = 9 restart steps, n = 1 restart; from 36 steps k = steps // 4, n = 2) between the
    given ends, and after the level nearest 0.1 the walk jumps to the level nearest 2 and comes down again n
    times over k Karras levels. Shapes: sigmas (steps + 1,)."""
    steps = len(sigmas) - 1
    restarts = {}
    if steps >= 20:
        k, n = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras_sigmas(sigmas[-2].item(), sigmas[0].item(), steps - k * n).to(sigmas.device)
        restarts = {int(torch.argmin((sigmas - 0.1).abs())): (k + 1, n, 2.0)}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts:
            k1, n, restart_max = restarts[i + 1]
            top = int(torch.argmin((sigmas - restart_max).abs()))
            if top < i + 1:
                levels = karras_sigmas(sigmas[i + 1].item(), sigmas[top].item(), k1)[:-1].to(sigmas.device)
                pairs += list(zip(levels[:-1], levels[1:])) * n
    return pairs


def sample_restart(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Heun steps along ``restart_plan(sigmas)``; where the plan goes back up, ``noise()`` raises x from the
    level reached to the restart level (variance old^2 - last^2). The last step to 0 is Euler.
    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at 0."""
    last = None
    for i, (sigma, sigma_next) in enumerate(restart_plan(sigmas)):
        if last is not None and last < sigma:  # 1. restart: jump back up with fresh noise
            x = x + noise() * (sigma**2 - last**2) ** 0.5
        denoised = denoiser(x, sigma, cond)  # 2. a Heun step (Euler to 0)
        d = (x - denoised) / sigma
        x_next = x + d * (sigma_next - sigma)
        if sigma_next != 0:
            d_next = (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next
            x_next = x + (d + d_next) / 2 * (sigma_next - sigma)
        x, last = x_next, sigma_next
        if callback is not None:
            callback(i, x, denoised)
    return x

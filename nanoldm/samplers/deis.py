"""DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"), the
time-quadrature form ('tab') as ComfyUI runs it (``sample_deis``, ``comfy/k_diffusion/deis.py``, after
diff-sampler's re-implementation): Adams-Bashforth on the slopes d = (x - D) / sigma, whose weights integrate
the Lagrange polynomials through the last ``order`` step times against the exponential integrator's kernel.

The times are those of a continuous VP SDE fitted to EDM's noise range (sigma from 0.002 to 80 at t from 1e-3 to
1, whatever the model's own range), and each weight is a 10 000-point Riemann sum in float32, as ComfyUI takes
them. The first step is Euler; the step to sigma = 0 lands on the denoised output.
"""
from __future__ import annotations

import math

import torch

from nanoldm.samplers.sigmas import per_schedule

EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_EPS = 0.002, 80, 1e-3  # ComfyUI's edm2t defaults
QUADRATURE_POINTS = 10000


def vp_times(sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise levels -> times of the VP SDE with sigma(t)^2 = exp(beta_d t^2 / 2 + beta_min t) - 1 through
    (1e-3, 0.002) and (1, 80), and its beta(0), beta(1). Shapes: (N,) -> (N,), 0-d, 0-d."""
    log_min = torch.log(torch.tensor(EDM_SIGMA_MIN) ** 2 + 1)  # float32, as ComfyUI's; its integer 80 makes
    log_max = torch.log(torch.tensor(EDM_SIGMA_MAX ** 2 + 1, dtype=torch.float64))  # beta_d, beta_min float64
    beta_d = 2 * (log_min / EDM_EPS - log_max) / (EDM_EPS - 1)
    beta_min = log_max - 0.5 * beta_d
    t = ((beta_min ** 2 + 2 * beta_d * (sigmas.detach().cpu() ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _kernel(beta_0: torch.Tensor, beta_1: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """-1/2 d log(alpha_bar)/dt / sqrt(alpha_bar (1 - alpha_bar)) with alpha_bar = exp(-t^2 (b1 - b0) / 2 - t b0)."""
    alpha_bar = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
    d_log_alpha_bar = -taus * (beta_1 - beta_0) - beta_0
    return -0.5 * d_log_alpha_bar / torch.sqrt(alpha_bar * (1 - alpha_bar))


def deis_coefficients(sigmas: torch.Tensor, max_order: int = 3) -> list[list[torch.Tensor]]:
    """Per step i, the weights of the slopes d_i, d_i-1, ... (empty for a first-order step). They depend on the
    noise levels alone, so they are kept for the last few schedules (a repeated generation reuses them).
    Shapes: sigmas (steps + 1,) -> steps lists of 0-d tensors."""
    return [list(step) for step in _coefficients(sigmas.float(), max_order)]


@per_schedule
def _coefficients(sigmas: torch.Tensor, max_order: int) -> list[list[torch.Tensor]]:
    t, beta_0, beta_1 = vp_times(sigmas)
    weights = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            weights.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), QUADRATURE_POINTS)
        dtau = (t[i + 1] - t[i]) / QUADRATURE_POINTS
        nodes = t[[i - k for k in range(order)]]
        kernel = _kernel(beta_0, beta_1, taus)
        step = []
        for j in range(order):
            lagrange = math.prod((taus - nodes[k]) / (nodes[j] - nodes[k]) for k in range(order) if k != j)
            step.append(torch.sum(kernel * lagrange) * dtau)
        weights.append(step)
    return weights


def sample_deis(denoiser, x, sigmas, *, cond, noise=None, callback=None, max_order: int = 3):
    """One denoiser call per step; ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    weights = deis_coefficients(sigmas, max_order)
    slopes: list[torch.Tensor] = []  # earlier slopes, newest last (at most max_order - 1)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        d = (x - denoised) / sigma
        if sigma_next <= 0 or not weights[i]:
            x = x + (sigma_next - sigma) * d
        else:
            for w, slope in zip(weights[i], [d, *reversed(slopes)]):  # newest first
                x = x + w.to(x.device) * slope
        slopes = [*slopes, d][-(max_order - 1):] if max_order > 1 else []
        if callback is not None:
            callback(i, x, denoised)
    return x

"""Linear multistep (Adams-Bashforth in sigma), as k-diffusion's ``sample_lms`` runs it."""
from __future__ import annotations

import math

import numpy as np


def lms_coefficient(order: int, sigmas: np.ndarray, i: int, j: int) -> float:
    """Integral over [sigmas[i], sigmas[i+1]] of the Lagrange basis polynomial of node sigmas[i - j] among the
    ``order`` latest nodes sigmas[i], ..., sigmas[i - order + 1]. The polynomial (degree < 4) is expanded and
    integrated exactly in Python floats (k-diffusion uses adaptive quadrature, exact to float rounding here)."""
    node = float(sigmas[i - j])
    others = [float(sigmas[i - k]) for k in range(order) if k != j]
    poly = [1.0]  # prod (s - n) over the other nodes, lowest power first
    for n in others:
        poly = [-n * poly[0]] + [poly[q - 1] - n * poly[q] for q in range(1, len(poly))] + [poly[-1]]

    def antiderivative(s: float) -> float:
        return sum(c * s ** (q + 1) / (q + 1) for q, c in enumerate(poly))

    scale = math.prod(node - n for n in others)
    return (antiderivative(float(sigmas[i + 1])) - antiderivative(float(sigmas[i]))) / scale


def sample_lms(denoiser, x, sigmas, *, cond, noise=None, callback=None, order: int = 4,
               last_denoised: bool = False):
    """Linear multistep on dx/dsigma = (x - D) / sigma: the next x extrapolates the slopes of the last ``order``
    steps with a polynomial in sigma (order 1 on the first step, rising to ``order``). ``noise`` is unused.
    ``last_denoised``: a step down to sigma 0 returns the prediction itself (ComfyUI's lms), not the extrapolation.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    nodes = sigmas.detach().cpu().double().numpy()
    slopes = []
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        slopes = [*slopes[-(order - 1):], (x - denoised) / sigmas[i]]  # 1. the latest `order` slopes
        k = min(i + 1, order)
        coefficients = [lms_coefficient(k, nodes, i, j) for j in range(k)]  # 2. weights of slopes i, i-1, ...
        if last_denoised and sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + sum(c * d for c, d in zip(coefficients, reversed(slopes)))
        if callback is not None:
            callback(i, x, denoised)
    return x

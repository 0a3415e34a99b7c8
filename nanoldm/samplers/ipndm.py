"""iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", the improved
pseudo numerical method; ComfyUI's ``ipndm`` and ``ipndm_v``): Adams-Bashforth on the probability-flow ODE
dx/dsigma = d = (x - D(x)) / sigma, with the last three slopes kept. The first steps warm up with the orders
they have (Euler, then 2, 3); the step to sigma = 0 jumps to the denoised output.

``ipndm`` uses the fixed-step coefficients (1; 3/2, -1/2; 23/12, -16/12, 5/12; 55/24, -59/24, 37/24, -9/24);
``ipndm_v`` the variable-step ones, which weigh each slope by the actual spacing of the noise levels. On an evenly
spaced grid they equal the fixed ones up to order 3; the order-4 formula (as in diff-sampler and ComfyUI) does
not reduce to AB4 there (2.375 for the newest slope, not 55/24), and it is kept as they have it.
"""
from __future__ import annotations

import torch

FIXED = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


def variable_coefficients(h: list[torch.Tensor]) -> tuple:
    """The variable-step Adams-Bashforth weights of the slopes, newest first, from the step sizes ``h`` =
    [h_n, h_n-1, ...] (this step's, then the earlier ones; order = len(h))."""
    if len(h) == 1:
        return (1.0,)
    h0, h1 = h[0], h[1]
    r = h0 / h1
    if len(h) == 2:
        return ((2 + r) / 2, -r / 2)
    h2 = h[2]
    a1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if len(h) == 3:
        return ((2 + r) / 2 + a1, -r / 2 - (1 + h1 / h2) * a1, a1 * h1 / h2)
    h3 = h[3]
    a2 = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2))) \
        * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return ((2 + r) / 2 + a1 + a2,
            -r / 2 - (1 + h1 / h2) * a1 - (1 + h1 / h2 + q) * a2,
            a1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * a2,
            -a2 * q * h1 / h2)


def sample_ipndm(denoiser, x, sigmas, *, cond, noise=None, callback=None, max_order: int = 4,
                 variable: bool = False):
    """One denoiser call per step; ``callback(i, x, denoised)``. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    slopes: list[torch.Tensor] = []  # earlier slopes, newest last (at most max_order - 1)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        if sigma_next == 0:
            x = denoised
        else:
            if variable:
                steps = [sigma_next - sigma] + [sigmas[i - k] - sigmas[i - k - 1] for k in range(order - 1)]
                weights = variable_coefficients(steps)
            else:
                weights = FIXED[order]
            history = [d, *reversed(slopes)]  # newest first; slopes holds exactly order - 1 of them
            x = x + (sigma_next - sigma) * sum(w * s for w, s in zip(weights, history))
        slopes = [*slopes, d][-(max_order - 1):] if max_order > 1 else []
        if callback is not None:
            callback(i, x, denoised)
    return x

"""DPM-Solver (Lu et al. 2022, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in
Around 10 Steps") in its noise-prediction form, as k-diffusion's ``DPMSolver`` runs it for "DPM fast" (fixed
steps, orders 3, ..., 3, 2, 1 spending exactly the requested model calls; sec. 3.3) and "DPM adaptive" (an
embedded pair of orders with PID step-size control; sec. 4.2 and appendix).

Time is t = -log(sigma) (lambda in the paper); eps = (x - D) / sigma. With ``eta`` > 0 each step goes down to
the ancestral sigma_down and adds fresh noise ``noise()`` back up to the step's end, as the ancestral samplers do.
Both read only sigmas[0] (start) and sigmas[-2] (the last non-zero level; the solvers end there, not at 0).
"""
from __future__ import annotations

import math

import torch

from nanoldm.samplers.euler import ancestral_step


class _Solver:
    """Steps of order 1, 2 and 3 in t; ``eps`` memoises the model call at a step's start."""

    def __init__(self, denoiser, cond, on_call):
        self.denoiser, self.cond, self.on_call = denoiser, cond, on_call

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            cache[key] = (x - self.denoiser(x, self.sigma(t), self.cond)) / self.sigma(t)
            self.on_call()
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1: float = 1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1: float = 1 / 3, r2: float = 2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, t, t_next, t_end, eta):
        """Where the deterministic part of a step ends (t_down) and the std of the noise added after it."""
        if not eta:
            return t_next, 0.0
        sigma_down, _ = ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_down = torch.minimum(t_end, -sigma_down.log())
        return t_down, (self.sigma(t_next) ** 2 - self.sigma(t_down) ** 2) ** 0.5


def _ends(sigmas):
    sigma_max, sigma_min = sigmas[0].detach().cpu().float(), sigmas[-2].detach().cpu().float()
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError("DPM fast and DPM adaptive need non-zero first and last noise levels")
    return -sigma_max.log(), -sigma_min.log()


def sample_dpm_fast(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 0.0):
    """DPM-Solver-fast with n = len(sigmas) - 1 model calls from sigmas[0] to sigmas[-2].
    Shapes: x (B, C, h, w) at sigmas[0], sigmas (n + 1,) -> x at sigmas[-2]."""
    n = len(sigmas) - 1
    t_start, t_end = _ends(sigmas)
    solver = _Solver(denoiser, cond, lambda: None)
    m = n // 3 + 1
    ts = torch.linspace(t_start.item(), t_end.item(), m + 1)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache, t, t_next = {}, ts[i], ts[i + 1]
        t_down, sigma_up = solver.ancestral_target(t, t_next, t_end, eta)
        denoised = x - solver.sigma(t) * solver.eps(cache, "eps", x, t)
        x = (solver.step_1, solver.step_2, solver.step_3)[order - 1](x, t, t_down, cache)
        x = x + sigma_up * noise()  # drawn even when eta = 0, as k-diffusion does
        if callback is not None:
            callback(i, x, denoised)
    return x


def _pid_factor(error: torch.Tensor, order: float, eps: float = 1e-8) -> float:
    """Integral step-size control (k-diffusion's PIDStepSizeController with pcoeff = dcoeff = 0, icoeff = 1):
    the next step size is h * limiter((1 / error)^(1 / order))."""
    inv_error = 1 / (float(error) + eps)
    factor = inv_error ** (1 / order)
    return 1 + math.atan(factor - 1)


def sample_dpm_adaptive(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 0.0,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                        accept_safety: float = 0.81):
    """DPM-Solver-23 (or -12 with ``order`` 2) with adaptive steps from sigmas[0] to sigmas[-2]; the number of
    steps is the controller's, not len(sigmas) - 1.
    Shapes: x (B, C, h, w) at sigmas[0], sigmas (n + 1,) -> x at sigmas[-2]."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    s, t_end = _ends(sigmas)
    solver = _Solver(denoiser, cond, lambda: None)
    h, x_prev, step = h_init, x, 0
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    control_order = 1.5 if eta else order
    while s < t_end - 1e-5:
        cache = {}
        t = torch.minimum(t_end, s + h)
        t_down, sigma_up = solver.ancestral_target(s, t, t_end, eta)
        denoised = x - solver.sigma(s) * solver.eps(cache, "eps", x, s)
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t_down, cache), solver.step_2(x, s, t_down, cache)
        else:
            x_low, x_high = solver.step_2(x, s, t_down, cache, r1=1 / 3), solver.step_3(x, s, t_down, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        factor = _pid_factor(error, control_order)
        h *= factor
        if factor >= accept_safety:  # accept the step
            x_prev = x_low
            x = x_high + sigma_up * noise()  # drawn even when eta = 0, as k-diffusion does
            s = t
        if callback is not None:
            callback(step, x, denoised)
        step += 1
    return x

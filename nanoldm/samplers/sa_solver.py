"""SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"), as
ComfyUI runs it (``sample_sa_solver``, ``sample_sa_solver_pece``, ``comfy/k_diffusion/sa_solver.py``):
a stochastic Adams predictor (order 3) and corrector (order 4) in lambda = -log(sigma), data prediction.

Between two levels the SDE with noise strength tau has the exact solution
x_t = (sigma_t / sigma_s) e^(-tau^2 h) x_s + alpha_t (1 + tau^2) int_s^t e^(-(1 + tau^2)(lambda_t - l)) D(l) dl
+ noise; D is replaced by its Lagrange polynomial through the last estimates, whose integrals against the
exponential are taken in closed form (by parts) and turned into weights by a Vandermonde solve. tau is 1 while
sigma lies between the levels at 20% and 80% of the training schedule and 0 (the ODE) elsewhere. Orders drop
near the end when the schedule ends at 0; the corrector re-uses the predictor's noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nanoldm.samplers.sigmas import per_schedule


def _exponential_moments(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """(1 + tau^2) int_s^t e^((1 + tau^2) l) l^p dl / e^((1 + tau^2) t) for p = 0 .. order - 1, by the
    recursion of integration by parts. Shapes: s, t 0-d -> (order,)."""
    k = 1 + tau ** 2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    ends = t ** p - s ** p * (-k * (t - s)).exp()  # the boundary terms, e^(kt) factored out
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_weight = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)  # log(p! / q!)
    if tau > 0:
        log_weight = log_weight - depth * math.log(k)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_weight.exp() * signs).tril() @ ends


def adams_weights(sigma_next: torch.Tensor, lambdas: torch.Tensor, lam_s: torch.Tensor, lam_t: torch.Tensor,
                  tau: float) -> torch.Tensor:
    """The weights of the estimates at ``lambdas`` (oldest first) for the step lam_s -> lam_t.
    Shapes: lambdas (K,) -> (K,)."""
    K = lambdas.shape[0]
    moments = _exponential_moments(lam_s, lam_t, K, tau)
    integrals = torch.linalg.solve(torch.vander(lambdas, K, increasing=True).T, moments)
    return sigma_next * lam_t.exp() * integrals  # alpha_t, with e^((1 + tau^2) lambda_t) put back


def _combine(estimates: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k] estimates[k]. Shapes: K x (B, C, h, w), (K,) -> (B, C, h, w)."""
    weights = weights.to(estimates[0].device, estimates[0].dtype)
    return torch.tensordot(torch.stack(estimates, dim=1), weights, dims=([1], [0]))


@dataclass(frozen=True)
class _Step:
    """One step's weights: the corrector's (None: keep the prediction) with its decay and whether it re-adds the
    predictor's noise; the predictor's (None: the step to sigma = 0) with its decay and noise scale (None: tau 0).
    Shapes: weights (K,), the rest 0-d."""

    corrector: torch.Tensor | None
    corrector_decay: torch.Tensor | None
    renoise: bool
    predictor: torch.Tensor | None
    predictor_decay: torch.Tensor | None
    noise_scale: torch.Tensor | None


@per_schedule
def _steps(sigmas: torch.Tensor, tau_range: tuple[float, float], predictor_order: int, corrector_order: int,
           pece: bool) -> list[_Step]:
    """Every step's weights: they depend on the noise levels alone, so a repeated schedule reuses them."""
    levels = sigmas.tolist()
    lambdas, n = -sigmas.log(), len(levels) - 1
    taper = levels[-1] == 0  # lower orders towards the end
    steps, h, tau = [], 0.0, 0.0
    for i in range(n):
        seen = min(i + 1, max(predictor_order, corrector_order))  # estimates kept so far
        p_order = min(predictor_order, seen)
        c_order = 0 if i == 0 or (levels[i + 1] == 0 and not pece) else min(corrector_order, seen)
        if taper:
            p_order, c_order = min(p_order, n - 1 - i), min(c_order, n - i)
        corrector = decay = None
        if c_order:  # tau and h are those of the predictor step that led here
            corrector = adams_weights(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau)
            decay = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp()
        renoise = tau > 0
        predictor = p_decay = noise_scale = None
        if levels[i + 1] != 0:
            tau = 1.0 if tau_range[0] >= levels[i + 1] >= tau_range[1] else 0.0
            predictor = adams_weights(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau)
            h = lambdas[i + 1] - lambdas[i]
            p_decay = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp()
            noise_scale = (-2 * tau ** 2 * h).expm1().neg().sqrt() if tau > 0 else None
        steps.append(_Step(corrector, decay, renoise, predictor, p_decay, noise_scale))
    return steps


def sample_sa_solver(denoiser, x, sigmas, *, cond, noise=None, callback=None, tau_range=(float("inf"), 0.0),
                     predictor_order: int = 3, corrector_order: int = 4, pece: bool = False):
    """SA-Solver, and with ``pece`` its predict-evaluate-correct-evaluate form (one more denoiser call per step,
    on the corrected state). ``tau_range`` = (start, end): tau is 1 where start >= sigma_next >= end.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    if len(sigmas) <= 1:
        return x
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    plan = _steps(sigmas, tuple(map(float, tau_range)), predictor_order, corrector_order, pece)
    x_pred, step_noise, estimates = x, None, []
    for i, step in enumerate(plan):
        denoised = denoiser(x_pred, sigmas[i], cond)
        estimates = [*estimates, denoised][-max(predictor_order, corrector_order):]
        # 1. correct the predicted state with the estimate made at it
        if step.corrector is None:
            x = x_pred
        else:
            x = step.corrector_decay.to(x.device) * x + _combine(estimates[-len(step.corrector):], step.corrector)
            if step.renoise:
                x = x + step_noise  # the predictor's noise, again
            if pece:
                denoised = estimates[-1] = denoiser(x, sigmas[i], cond)
        # 2. predict the next state
        if step.predictor is None:
            x_pred = denoised
        else:
            x_pred = step.predictor_decay.to(x.device) * x + _combine(estimates[-len(step.predictor):], step.predictor)
            if step.noise_scale is not None:
                step_noise = noise() * sigmas[i + 1] * step.noise_scale.to(x.device)
                x_pred = x_pred + step_noise
        if callback is not None:
            callback(i, x_pred, denoised)
    return x_pred

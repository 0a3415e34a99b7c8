"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion
Models"), multistep in its data-prediction form with the B(h) coefficients, as A1111 runs it for "UniPC", in sigma
space.

With lambda = -log(sigma) (half the log-SNR) and h = lambda_t - lambda_s, a step from s to t starts from the exact
solution with the denoised output D_s held constant, x_t = (sigma_t / sigma_s) x_s - expm1(-h) D_s (DDIM), and
corrects it by B(h) times a combination of the divided differences (D_i - D_s) / r_i of earlier outputs, r_i =
(lambda_i - lambda_s) / h: that is the predictor UniP. The corrector UniC redoes the step with the output at the
predicted point added to the combination (one order higher); that output is also the next step's D_s, so a step
costs one denoiser call. The paper's VP update (x_vp = alpha x) divided by alpha_t is this one: its coefficients
depend on lambda alone.

A1111's time grid is that of the DPM-Solver / UniPC code's ``NoiseScheduleVP('discrete')``: the N training steps
sit at continuous times t_i = (i + 1) / N, log alpha = 0.5 log(alpha_bar) is piecewise linear in t between them,
the "time_uniform" grid runs linearly in t from 1 (img2img: a t_start) to 1 / N, and the UNet is fed the
fractional timestep (t - 1/N) * 1000.
"""
from __future__ import annotations

import bisect
import functools

import torch

from nanoldm.samplers.sigmas import per_schedule

VARIANTS = ("bh1", "bh2")


def _b_coefficients(h: torch.Tensor, order: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """B(h) and b_k = k! * hh * phi_{k+1}(hh) / B(h) for k = 1..order, hh = -h, where phi_1(z) = (e^z - 1) / z and
    phi_{k+1}(z) = (phi_k(z) - 1 / k!) / z; bh1: B(h) = hh, bh2: B(h) = expm1(hh) (UniPC sec. 3.2).

    Shapes: h () -> B(h) (), b (order,).
    """
    hh = -h
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    h_phi = torch.expm1(hh) / hh - 1  # 1. hh * phi_2(hh)
    b, factorial = [], 1
    for k in range(1, order + 1):  # 2. climb phi_{k+1} -> phi_{k+2} by the recurrence
        b.append(h_phi * factorial / b_h)
        factorial *= k + 1
        h_phi = h_phi / hh - 1 / factorial
    return b_h, torch.stack(b)


def _rhos(rks: torch.Tensor, b: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of the divided differences: the predictor's solve the first order - 1 rows of R rho = b with
    R_ik = r_k^i, the corrector's all ``order`` rows (rks ends with r = 1, the predicted point); order 2's
    predictor and order 1's corrector take the simplified weight 1/2 as the reference code does.

    Shapes: rks (order,), b (order,) -> rhos_p (order - 1,), rhos_c (order,).
    """
    R = torch.stack([rks**i for i in range(order)])
    if order == 1:
        rhos_p = rks.new_zeros(0)
    elif order == 2:
        rhos_p = rks.new_tensor([0.5])
    else:
        rhos_p = torch.linalg.solve(R[:-1, :-1], b[:-1])
    rhos_c = rks.new_tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)
    return rhos_p, rhos_c


def _combine(weights: torch.Tensor, diffs: list[torch.Tensor]):
    return sum((w * d for w, d in zip(weights, diffs)), torch.zeros(()))


@per_schedule
def _plan(sigmas: torch.Tensor, order: int, variant: str, lower_order_final: bool):
    """Per step: (its order, r_k, B(h), the predictor's and the corrector's weights, sigma_next / sigma,
    expm1(-h)). They depend on the noise levels alone, so a repeated schedule reuses them.
    Shapes: rks (order,), rhos_p (order - 1,), rhos_c (order,), the rest 0-d."""
    steps, lambdas, plan = len(sigmas) - 1, [-torch.log(sigmas[0])], []
    for i in range(steps):
        j = i + 1  # 1. the order: warm-up j < order, then the full order or (lower_order_final) the steps left
        step_order = min(order, steps + 1 - j) if lower_order_final and j >= order else min(order, j)
        lam_s = lambdas[-1]
        h = -torch.log(sigmas[j]) - lam_s  # 2. step size in lambda, and the earlier outputs' place in it
        rks = torch.stack([(lambdas[-1 - k] - lam_s) / h for k in range(1, step_order)] + [h.new_tensor(1.0)])
        b_h, b = _b_coefficients(h, step_order, variant)
        plan.append((step_order, rks, b_h, *_rhos(rks, b, step_order), sigmas[j] / sigmas[i], torch.expm1(-h)))
        lambdas = [*lambdas, -torch.log(sigmas[j])][-order:]
    return plan


def sample_unipc(denoiser, x, sigmas, *, cond, noise=None, callback=None, order: int = 3, variant: str = "bh1",
                 lower_order_final: bool = True):
    """UniPC multistep (Zhao et al. 2023, algorithm 3 with B(h) = h "bh1" or e^h - 1 "bh2"), A1111's "UniPC":
    one denoiser call per step (at sigmas[0], then at each predicted point, none after the last step, which
    skips the corrector); the first steps warm up with orders 1, 2, ...; ``lower_order_final`` lowers the order
    of the last steps to the steps left. ``callback(i, x, denoised)`` gets the output step i started from.
    ``noise`` is unused.

    A step of ``order`` from sigma to sigma_next: UniP from the last ``order`` outputs, then UniC with the output
    at the predicted point, which is also the next step's D_s.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending, all > 0 -> x at sigmas[-1].
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown UniPC variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    steps = len(sigmas) - 1
    if not 1 <= order <= steps:
        raise ValueError(f"UniPC order must be between 1 and the number of steps ({steps}), got {order}")
    if sigmas[-1] <= 0:
        raise ValueError("UniPC needs sigmas > 0: it ends at a small positive noise level, not at 0")
    plan = _plan(sigmas, order, variant, lower_order_final)
    denoised = [denoiser(x, sigmas[0], cond)]  # the last ``order`` outputs, oldest first
    for i, (step_order, rks, b_h, rhos_p, rhos_c, ratio, expm1_h) in enumerate(plan):
        d_s = denoised[-1]
        diffs = [(denoised[-1 - k] - d_s) / rks[k - 1] for k in range(1, step_order)]  # 1. divided differences
        x_lin = ratio * x - expm1_h * d_s  # 2. exact integration with D_s constant
        x_pred = x_lin - b_h * _combine(rhos_p, diffs)  # 3. UniP
        if i + 1 == steps:
            x = x_pred
        else:  # 4. UniC: the output at the predicted point joins the fit
            d_next = denoiser(x_pred, sigmas[i + 1], cond)
            x = x_lin - b_h * (_combine(rhos_c[:-1], diffs) + rhos_c[-1] * (d_next - d_s))
            denoised = [*denoised, d_next][-order:]
        if callback is not None:
            callback(i, x, d_s)
    return x


def _log_alpha_knots(alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The knots of A1111's piecewise-linear log alpha: t_i = (i + 1) / N, 0.5 log(alpha_bar_i).
    Shapes: (N,) -> (N,), (N,) float64, t ascending, log alpha descending."""
    n = len(alphas_cumprod)
    return torch.arange(1, n + 1, dtype=torch.float64) / n, 0.5 * torch.log(alphas_cumprod.double().cpu())


def _interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(x) through ascending knots xp, extended linearly beyond them by the outer segments."""
    idx = (torch.searchsorted(xp, x) - 1).clamp(0, len(xp) - 2)
    return yp[idx] + (x - xp[idx]) * (yp[idx + 1] - yp[idx]) / (xp[idx + 1] - xp[idx])


def vp_discrete_sigmas(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Sigma (sigma space: sqrt((1 - alpha^2) / alpha^2)) at continuous times t in [1/N, 1] of A1111's
    ``NoiseScheduleVP('discrete')``. Shapes: alphas_cumprod (N,), t (n,) -> (n,) float64."""
    knots, log_alpha = _log_alpha_knots(alphas_cumprod)
    return torch.expm1(-2 * _interpolate(t.double().cpu(), knots, log_alpha)).sqrt()


def vp_discrete_timestep(alphas_cumprod: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The UNet timestep A1111's UniPC feeds at noise level ``sigma``: the t whose interpolated log alpha is
    -0.5 log(1 + sigma^2), as (t - 1/N) * 1000 (A1111's formula for any N; the training step index for
    N = 1000), fractional. Inverts :func:`vp_discrete_sigmas`. Shapes: (N,), sigma (n,) or () -> like sigma,
    float64."""
    return VPTimestep(alphas_cumprod)(sigma)


class VPTimestep:
    """:func:`vp_discrete_timestep` with the schedule's knots prepared once (the Denoiser asks at every call)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        knots, log_alpha = _log_alpha_knots(alphas_cumprod)
        self.log_alpha, self.knots, self.n = log_alpha.flip(0), knots.flip(0), len(knots)

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        target = -0.5 * torch.log1p(sigma.double().cpu() ** 2)
        t = _interpolate(target.reshape(-1), self.log_alpha, self.knots).reshape(target.shape)
        return (t - 1 / self.n) * 1000

    def at(self, sigma: float) -> float:
        """The same for one noise level, in Python floats after torch's log1p (the Denoiser's one-level path)."""
        target = -0.5 * torch.tensor(sigma, dtype=torch.float64).square().log1p().item()
        xp, yp = self._lists
        i = min(max(bisect.bisect_left(xp, target) - 1, 0), len(xp) - 2)
        t = yp[i] + (target - xp[i]) * (yp[i + 1] - yp[i]) / (xp[i + 1] - xp[i])
        return (t - 1 / self.n) * 1000

    @functools.cached_property
    def _lists(self) -> tuple[list[float], list[float]]:
        return self.log_alpha.tolist(), self.knots.tolist()


def unipc_times(steps: int, num_train_timesteps: int = 1000, t_start: float | None = None) -> torch.Tensor:
    """A1111's "time_uniform" grid: steps + 1 times from t_start (default 1; img2img: its last CompVis timestep
    / 1000 + 1 / 1000) down to 1 / N. Shapes: -> (steps + 1,) float64 descending."""
    start = 1.0 if t_start is None else float(t_start)
    return torch.linspace(start, 1 / num_train_timesteps, steps + 1, dtype=torch.float64)

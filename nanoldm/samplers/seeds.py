"""Stochastic exponential integrators in data prediction, as ComfyUI runs them (``comfy/k_diffusion/sampling.py``):

- SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling
  from Diffusion Models"): two and three model calls per step at fractions r of the step in lambda = -log(sigma),
  with noise that stays correlated across the stages of a step (``seeds_2``, ``seeds_3``); with r = 1 and the
  phi_2 weights SEEDS-2 is the exponential Heun method (``exp_heun_2_x0``, ``exp_heun_2_x0_sde``).
- ER-SDE-Solver-3 (Cui et al. 2023, "Elucidating the solution space of extended reverse-time SDE for diffusion
  models"): first to third order in the noise level, with the integrals of its noise scale taken on 200 points
  (``er_sde``).

With eta > 0 each stage draws fresh ``noise()`` (even where its weight is 0, so the stream stays in step with
ComfyUI's). ComfyUI's alpha factors (its half-logSNR form, shared with flow models) are 1 here and left out.
"""
from __future__ import annotations

import torch

from nanoldm.samplers.sigmas import per_schedule


def _phi_1(h: torch.Tensor) -> torch.Tensor:
    """h phi_1(h) = e^h - 1."""
    return torch.expm1(h)


def _phi_2(h: torch.Tensor) -> torch.Tensor:
    """h phi_2(h) = (e^h - 1 - h) / h."""
    return (torch.expm1(h) - h) / h


def _step(sigma, sigma_next, eta):
    """lambda = -log(sigma) at both ends, the step h in it, and h (eta + 1)."""
    lam, lam_next = -sigma.log(), -sigma_next.log()
    h = lam_next - lam
    return lam, lam_next, h, h * (eta + 1)


def _first_stage(x, sigma, denoised, lam, lam_next, h, h_eta, r, eta, noise):
    """The first-order stage to the level at fraction r of the step: (its sigma, x there, the noise added)."""
    sigma_r = torch.lerp(lam, lam_next, r).neg().exp()
    x_r = sigma_r / sigma * (-r * h * eta).exp() * x - _phi_1(-r * h_eta) * denoised
    sde_noise = None
    if eta > 0:
        sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise()
        x_r = x_r + sde_noise * sigma_r
    return sigma_r, x_r, sde_noise


def _carry(sde_noise, noise, factor):
    """Noise correlated across stages: the earlier part decays by e^factor, fresh noise fills the rest."""
    return sde_noise * factor.exp() + factor.mul(2).expm1().neg().sqrt() * noise()


def sample_seeds_2(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0, r: float = 0.5,
                   solver: str = "phi_1"):
    """SEEDS-2: a first-order stage to the level at fraction ``r`` of the step, then the full step from both
    estimates (``solver`` "phi_1": their blend 1/(2r); "phi_2": the exponential Heun weights). eta = 0: no noise.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            lam, lam_next, h, h_eta = _step(sigma, sigma_next, eta)
            sigma_1, x_1, sde_noise = _first_stage(x, sigma, denoised, lam, lam_next, h, h_eta, r, eta, noise)
            denoised_1 = denoiser(x_1, sigma_1, cond)
            decay = sigma_next / sigma * (-h * eta).exp()
            if solver == "phi_1":
                x = decay * x - _phi_1(-h_eta) * torch.lerp(denoised, denoised_1, 1 / (2 * r))
            else:
                b2 = _phi_2(-h_eta) / r
                x = decay * x - ((_phi_1(-h_eta) - b2) * denoised + b2 * denoised_1)
            if eta > 0:
                x = x + _carry(sde_noise, noise, (r - 1) * h * eta) * sigma_next
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_seeds_3(denoiser, x, sigmas, *, cond, noise=None, callback=None, eta: float = 1.0, r_1: float = 1 / 3,
                   r_2: float = 2 / 3):
    """SEEDS-3: stages at fractions r_1 and r_2 of the step, then the full step from the first and the third
    estimate (phi_2 weights). Three denoiser calls per step but the last.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        if sigma_next == 0:
            x = denoised
        else:
            lam, lam_next, h, h_eta = _step(sigma, sigma_next, eta)
            sigma_1, x_1, sde_noise = _first_stage(x, sigma, denoised, lam, lam_next, h, h_eta, r_1, eta, noise)
            denoised_1 = denoiser(x_1, sigma_1, cond)
            sigma_2 = torch.lerp(lam, lam_next, r_2).neg().exp()
            a2 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
            x_2 = sigma_2 / sigma * (-r_2 * h * eta).exp() * x - ((_phi_1(-r_2 * h_eta) - a2) * denoised
                                                                   + a2 * denoised_1)
            if eta > 0:
                sde_noise = _carry(sde_noise, noise, (r_1 - r_2) * h * eta)
                x_2 = x_2 + sde_noise * sigma_2
            denoised_2 = denoiser(x_2, sigma_2, cond)
            b3 = _phi_2(-h_eta) / r_2
            x = sigma_next / sigma * (-h * eta).exp() * x - ((_phi_1(-h_eta) - b3) * denoised + b3 * denoised_2)
            if eta > 0:
                x = x + _carry(sde_noise, noise, (r_2 - 1) * h * eta) * sigma_next
        if callback is not None:
            callback(i, x, denoised)
    return x


def _er_noise_scale(lam: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scale function of lambda = sigma: lambda (e^(lambda^0.3) + 10)."""
    return lam * ((lam ** 0.3).exp() + 10.0)


@per_schedule
def _er_coefficients(sigmas: torch.Tensor, max_stage: int, points: int) -> list[tuple]:
    """Per step: (ratio, its second-order weight and divisor, third-order weight and divisor, the noise's std);
    weights None below the stage a step reaches; None for a step to sigma = 0 (cached per schedule)."""
    levels = sigmas.tolist()
    grid = torch.arange(0, float(points), dtype=torch.float32)
    out = []
    for i in range(len(levels) - 1):
        if levels[i + 1] == 0:  # the step to 0 returns the estimate
            out.append(None)
            continue
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        scale_next = _er_noise_scale(sigma_next)
        ratio = scale_next / _er_noise_scale(sigma)
        second = third = None
        if i >= 1 and max_stage >= 2:
            dt = sigma_next - sigma
            step = -dt / points
            at = sigma_next + grid * step  # the integration points, from sigma_next up towards sigma
            scaled = _er_noise_scale(at)
            second = (dt + torch.sum(1 / scaled) * step * scale_next, sigma - sigmas[i - 1])
            if i >= 2 and max_stage >= 3:
                s_u = torch.sum((at - sigma) / scaled) * step
                third = ((dt ** 2) / 2 + s_u * scale_next, (sigma - sigmas[i - 2]) / 2)
        std = (sigma_next ** 2 - sigma ** 2 * ratio ** 2).sqrt().nan_to_num(nan=0.0)
        out.append((ratio, second, third, std))
    return out


def sample_er_sde(denoiser, x, sigmas, *, cond, noise=None, callback=None, max_stage: int = 3,
                  points: int = 200):
    """ER-SDE-Solver-3: a first-order step in the noise level sigma, then second- and third-order terms from
    divided differences of the earlier estimates (once there are that many), and fresh ``noise()`` sized so the
    step's variance is right; the weights are integrals of the noise scale over the step, on ``points`` points.
    The step to sigma = 0 returns the denoised output.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
    """
    noise = noise if noise is not None else (lambda: torch.randn_like(x))
    table = _er_coefficients(sigmas, max_stage, points)
    old, old_d = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            ratio, second, third, std = table[i]  # 0-d CPU tensors, which act as numbers on any device
            x = ratio * x + (1 - ratio) * denoised  # 1. first order
            if second is not None:
                d = (denoised - old) / second[1]  # 2. second order, from the divided difference
                x = x + second[0] * d
                if third is not None:  # 3. third order
                    d2 = (d - old_d) / third[1]
                    x = x + third[0] * d2
                old_d = d
            x = x + noise() * std
        old = denoised
        if callback is not None:
            callback(i, x, denoised)
    return x

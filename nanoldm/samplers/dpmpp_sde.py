"""Stochastic DPM-Solver++ samplers (Lu et al. 2022, "DPM-Solver++"; the SDE forms as k-diffusion writes them).

Each takes ``noise_sampler(sigma, sigma_next) -> N(0, I)``: a Brownian tree (``samplers/brownian.py``), so
the noise added between two levels is one path's increment. ``eta`` scales the noise (0: the ODE solver).
Shapes of every sampler: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at sigmas[-1].
"""
from __future__ import annotations

import torch

from nanoldm.samplers.euler import ancestral_step


def sample_dpmpp_sde(denoiser, x, sigmas, *, cond, noise=None, callback=None, noise_sampler, eta: float = 1.0,
                     r: float = 0.5):
    """DPM-Solver++(2S) with ancestral noise on both substeps (k-diffusion's ``sample_dpmpp_sde``): two denoiser
    calls per step (the last step to 0 is Euler)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        if sigma_next == 0:
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
        else:
            # in lambda = -log(sigma); levels are computed back from lambda (as k-diffusion does), so the
            # Brownian tree is queried at exactly the same noise levels
            lam, lam_next = -sigma.log(), -sigma_next.log()
            lam_s = lam + r * (lam_next - lam)  # 1. the intermediate level, a fraction r of the way
            sigma_t, sigma_s, sigma_n = (-lam).exp(), (-lam_s).exp(), (-lam_next).exp()
            sd, su = ancestral_step(sigma_t, sigma_s, eta)  # 2. first order to it, with noise
            x_s = (sd / sigma_t) * x - torch.expm1(lam + sd.log()) * denoised
            x_s = x_s + noise_sampler(sigma_t, sigma_s) * su
            denoised_s = denoiser(x_s, sigma_s, cond)
            sd, su = ancestral_step(sigma_t, sigma_n, eta)  # 3. the whole step with D mixed from both ends
            fac = 1 / (2 * r)
            d = (1 - fac) * denoised + fac * denoised_s
            x = (sd / sigma_t) * x - torch.expm1(lam + sd.log()) * d
            x = x + noise_sampler(sigma_t, sigma_n) * su
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpmpp_2m_sde(denoiser, x, sigmas, *, cond, noise=None, callback=None, noise_sampler, eta: float = 1.0,
                        solver_type: str = "midpoint"):
    """DPM-Solver++(2M) SDE: one denoiser call per step, the previous step's D as the second-order correction
    (``solver_type`` "midpoint" or "heun"), the last step lands on D."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        h = None
        if sigma_next == 0:
            x = denoised
        else:
            h = torch.log(sigma / sigma_next)  # 1. step in lambda; eta_h: the part of it that is noise
            eta_h = eta * h
            x = sigma_next / sigma * torch.exp(-eta_h) * x - torch.expm1(-h - eta_h) * denoised
            if old_denoised is not None:  # 2. second order from the previous D
                phi = -torch.expm1(-h - eta_h)
                scale = (phi / (-h - eta_h) + 1) if solver_type == "heun" else 0.5 * phi
                x = x + scale * (h / h_last) * (denoised - old_denoised)
            if eta:  # 3. noise of the SDE over the step
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * (-torch.expm1(-2 * eta_h)).sqrt()
        old_denoised, h_last = denoised, h
        if callback is not None:
            callback(i, x, denoised)
    return x


def sample_dpmpp_3m_sde(denoiser, x, sigmas, *, cond, noise=None, callback=None, noise_sampler, eta: float = 1.0):
    """DPM-Solver++(3M) SDE: third order from the last two steps' D (second order on the second step)."""
    d_1, d_2, h_1, h_2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        h = None
        if sigma_next == 0:
            x = denoised
        else:
            h = torch.log(sigma / sigma_next)
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x - torch.expm1(-h_eta) * denoised  # 1. first order
            phi_2 = torch.expm1(-h_eta) / h_eta + 1
            if h_2 is not None:  # 2. third order: first and second divided differences of D
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:  # 2'. second order
                x = x + phi_2 * (denoised - d_1) / (h_1 / h)
            if eta:  # 3. noise
                x = x + noise_sampler(sigma, sigma_next) * sigma_next * (-torch.expm1(-2 * h * eta)).sqrt()
        d_1, d_2, h_1, h_2 = denoised, d_1, h, h_1
        if callback is not None:
            callback(i, x, denoised)
    return x

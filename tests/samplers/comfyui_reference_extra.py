"""More of ComfyUI's own samplers, restated from its ``comfy/k_diffusion/sampling.py``, ``deis.py`` and
``sa_solver.py`` (02159d8) for SD 1.x (EPS on ``ModelSamplingDiscrete``: lambda = -log sigma, sigma = exp(-lambda),
alpha = sigma * exp(lambda), noise_scale 1, the first sigma left as it is), with the CFG++ family of
``comfyui_reference_cfgpp``, and the table ``comfyui_reference`` dispatches them from. Each function is
``fn(model, x, sigmas, noise_sampler)`` as described there; float operations keep ComfyUI's order and dtypes."""
from __future__ import annotations

import math

import numpy as np
import torch

from tests.samplers import comfyui_reference_cfgpp as cfgpp


def _phi_2(v):
    """``ei_h_phi_2``: h phi_2(h) = (expm1(h) - h) / h (``ei_h_phi_1`` is expm1 itself)."""
    return (torch.expm1(v) - v) / v


def heunpp2(model, x, sigmas, noise_sampler=None):
    """``sample_heunpp2`` (s_churn 0, so sigma_hat = sigma * 1.0 = sigma; ComfyUI still draws an unused
    ``randn_like`` from the global generator each step, not done here): Euler into the last sigma, a weighted Heun
    step into the one before it (weights 1 - w2 and w2 = sigma_next / (2 sigma_0)), else three slopes at sigma,
    sigma_next (Euler from x) and sigma_next2 (Euler from there) weighted 1 - w2 - w3, w2, w3 with
    w_k = sigma_k / (3 sigma_0)."""
    ones, last = x.new_ones([x.shape[0]]), sigmas[-1]
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = (x - model(x, sigma * ones)) / sigma
        dt = sigma_next - sigma
        if sigma_next == last:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = (x_2 - model(x_2, sigma_next * ones)) / sigma_next
        if sigmas[i + 2] == last:
            w2 = sigma_next / (2 * sigmas[0])
            slope = d * (1 - w2) + d_2 * w2
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigma_next)
            d_3 = (x_3 - model(x_3, sigmas[i + 2] * ones)) / sigmas[i + 2]
            w = 3 * sigmas[0]
            w2, w3 = sigma_next / w, sigmas[i + 2] / w
            slope = (1 - w2 - w3) * d + w2 * d_2 + w3 * d_3
        x = x + slope * dt
    return x


def _deis_time(sigmas, eps_s=1e-3, sigma_min=0.002, sigma_max=80):
    """``deis.edm2t``: the VP time t of each sigma for the VP schedule through (eps_s, sigma_min) and (1, sigma_max)
    (EDM's range, whatever the model's): beta_d, beta_min from numpy's logs (float32 for sigma_min as a float32
    tensor, float64 for the integer 80), t = (sqrt(beta_min^2 + 2 beta_d log(sigma^2 + 1)) - beta_min) / beta_d.
    Returns t, beta_0 = beta_min and beta_1 = beta_d + beta_min (0-dim float64)."""
    log_lo = torch.tensor(np.log((torch.tensor(sigma_min) ** 2 + 1).numpy()))
    log_hi = torch.tensor(np.log(np.int64(sigma_max) ** 2 + 1))
    beta_d = 2 * (log_lo / eps_s - log_hi) / (eps_s - 1)
    beta_min = log_hi - 0.5 * beta_d
    t = ((beta_min ** 2 + 2 * beta_d * (sigmas ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _deis_integrand(beta_0, beta_1, taus):
    """``deis.cal_intergrand``: dsigma/dt = -0.5 (d log alpha / dt) / sqrt(alpha (1 - alpha)) with
    alpha = exp(-t^2 (beta_1 - beta_0) / 2 - t beta_0), the derivative taken by autograd as ComfyUI takes it."""
    with torch.inference_mode(False), torch.enable_grad():
        taus = taus.clone().requires_grad_(True)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        alpha.log().sum().backward()
    alpha = alpha.detach()
    return -0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))


def deis_coefficients(sigmas, max_order=3, n=10000):
    """``deis.get_deis_coeff_list`` in 'tab' mode: for step i at order k = min(i + 1, max_order) > 1, the
    Lagrange basis on the k latest VP times integrated against dsigma/dt over [t_i, t_i+1] as a left Riemann sum
    on ``linspace(t_i, t_i+1, n)`` times dt = (t_i+1 - t_i) / n; order 1 gets []."""
    t, beta_0, beta_1 = _deis_time(sigmas)
    table = []
    for i in range(len(t) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            table.append([])
            continue
        taus = torch.linspace(t[i], t[i + 1], n)
        dtau = (t[i + 1] - t[i]) / n
        nodes = t[[i - k for k in range(order)]]
        integrand = _deis_integrand(beta_0, beta_1, taus)
        row = []
        for j in range(order):
            basis = 1
            for k in range(order):
                if k != j:
                    basis = basis * ((taus - nodes[k]) / (nodes[j] - nodes[k]))
            row.append(torch.sum(integrand * basis) * dtau)
        table.append(row)
    return table


def deis(model, x, sigmas, noise_sampler=None, max_order=3):
    """``sample_deis`` (max_order 3, 'tab'): x_next = x + c_0 d + c_1 d_prev + ... on the slopes d = (x - D) / sigma
    (most recent first); Euler on the first step and into sigma 0."""
    ones, table, history = x.new_ones([x.shape[0]]), deis_coefficients(sigmas, max_order), []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d = (x - model(x, sigma * ones)) / sigma
        order = min(max_order, i + 1) if sigma_next > 0 else 1
        if order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            x_next = x + table[i][0] * d
            for k in range(1, order):
                x_next = x_next + table[i][k] * history[-k]
        history = (history + [d])[-(max_order - 1):]
        x = x_next
    return x


def er_sde(model, x, sigmas, noise_sampler, s_noise=1.0, max_stage=3):
    """``sample_er_sde`` (VP ER-SDE-Solver-3, arXiv 2309.06169) with its default noise scaler
    f(l) = l (exp(l^0.3) + 10) on l = sigma / alpha = exp(log sigma); the stage-2/3 integrals are left sums over
    200 points from l_t towards l_s. Noise is added on every step but the last."""
    def scaler(v):
        return v * ((v ** 0.3).exp() + 10.0)

    ones, points = x.new_ones([x.shape[0]]), torch.arange(0, 200.0, dtype=torch.float32)
    lambdas = sigmas.log().exp()  # half_log_snr.neg().exp(), the two negations being exact; 0 at sigma 0
    old_denoised = old_slope = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones)
        stage = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            r = scaler(lam_t) / scaler(lam_s)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / 200.0
                grid = lam_t + points * step
                scaled = scaler(grid)
                slope = (denoised - old_denoised) / (lam_s - lambdas[i - 1])
                x = x + alpha_t * (dt + torch.sum(1 / scaled) * step * scaler(lam_t)) * slope
                if stage >= 3:
                    s_u = torch.sum((grid - lam_s) / scaled) * step
                    curvature = (slope - old_slope) / ((lam_s - lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * scaler(lam_t)) * curvature
                old_slope = slope
            if s_noise > 0:
                spread = (lam_t ** 2 - lam_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x


def seeds_2(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, r=0.5, solver_type="phi_1"):
    """``sample_seeds_2`` (SEEDS-2, arXiv 2305.14267, VP data prediction): a first stage to lambda_s + r h, then
    the full step with the lerp of the two predictions (phi_1) or the b1, b2 = phi_2(-h_eta) / r weights (phi_2);
    h_eta = h (eta + 1). With noise, two draws per step (sigma -> sigma_1, sigma_1 -> sigma_next), the first one
    carried into the second segment."""
    ones, noisy = x.new_ones([x.shape[0]]), eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        if sigma_next == 0:
            x = denoised
            continue
        lam_s, lam_t = sigma.log().neg(), sigma_next.log().neg()
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1 = torch.lerp(lam_s, lam_t, r)
        sigma_1 = lam_1.neg().exp()
        alpha_1, alpha_t = sigma_1 * lam_1.exp(), sigma_next * lam_t.exp()
        x_2 = sigma_1 / sigma * (-r * h * eta).exp() * x - alpha_1 * torch.expm1(-r * h_eta) * denoised
        if noisy:
            noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigma, sigma_1)
            x_2 = x_2 + noise * sigma_1 * s_noise
        denoised_2 = model(x_2, sigma_1 * ones)
        if solver_type == "phi_1":
            mixed = torch.lerp(denoised, denoised_2, 1 / (2 * r))
            x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * torch.expm1(-h_eta) * mixed
        else:
            b2 = _phi_2(-h_eta) / r
            b1 = torch.expm1(-h_eta) - b2
            x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if noisy:
            segment = (r - 1) * h * eta
            noise = noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_1, sigma_next)
            x = x + noise * sigma_next * s_noise
    return x


def seeds_3(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3):
    """``sample_seeds_3`` (SEEDS-3): stages at lambda_s + r_1 h and lambda_s + r_2 h, the full step from the first
    and third predictions (b3 = phi_2(-h_eta) / r_2, b1 = phi_1(-h_eta) - b3); three noise draws per step."""
    ones, noisy = x.new_ones([x.shape[0]]), eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        if sigma_next == 0:
            x = denoised
            continue
        lam_s, lam_t = sigma.log().neg(), sigma_next.log().neg()
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        lam_1, lam_2 = torch.lerp(lam_s, lam_t, r_1), torch.lerp(lam_s, lam_t, r_2)
        sigma_1, sigma_2 = lam_1.neg().exp(), lam_2.neg().exp()
        alpha_1, alpha_2, alpha_t = sigma_1 * lam_1.exp(), sigma_2 * lam_2.exp(), sigma_next * lam_t.exp()
        x_2 = sigma_1 / sigma * (-r_1 * h * eta).exp() * x - alpha_1 * torch.expm1(-r_1 * h_eta) * denoised
        if noisy:
            noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigma, sigma_1)
            x_2 = x_2 + noise * sigma_1 * s_noise
        denoised_2 = model(x_2, sigma_1 * ones)
        a3_2 = r_2 / r_1 * _phi_2(-r_2 * h_eta)
        a3_1 = torch.expm1(-r_2 * h_eta) - a3_2
        x_3 = sigma_2 / sigma * (-r_2 * h * eta).exp() * x - alpha_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if noisy:
            segment = (r_1 - r_2) * h * eta
            noise = noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_1, sigma_2)
            x_3 = x_3 + noise * sigma_2 * s_noise
        denoised_3 = model(x_3, sigma_2 * ones)
        b3 = _phi_2(-h_eta) / r_2
        b1 = torch.expm1(-h_eta) - b3
        x = sigma_next / sigma * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if noisy:
            segment = (r_2 - 1) * h * eta
            noise = noise * segment.exp() + segment.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_2, sigma_next)
            x = x + noise * sigma_next * s_noise
    return x


def exp_heun_2_x0(model, x, sigmas, noise_sampler=None):
    """``sample_exp_heun_2_x0``: seeds_2 with eta = s_noise = 0, r = 1, phi_2."""
    return seeds_2(model, x, sigmas, noise_sampler, eta=0.0, s_noise=0.0, r=1.0, solver_type="phi_2")


def exp_heun_2_x0_sde(model, x, sigmas, noise_sampler):
    """``sample_exp_heun_2_x0_sde``: seeds_2 with eta = 1, r = 1, phi_2 (the second draw is taken and weighted 0)."""
    return seeds_2(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, r=1.0, solver_type="phi_2")


def _exponential_integrals(s, t, order, tau):
    """``sa_solver.compute_exponential_coeffs``: for p < order, (1 + tau^2) times the integral over [s, t] of
    exp((1 + tau^2)(u - t)) u^p, as the lower-triangular matrix of the integration-by-parts recursion
    ((-1)^(p-q) p!/q! / (1 + tau^2)^(p-q), built from lgamma) times t^q - s^q exp(-(1 + tau^2)(t - s))."""
    k = 1 + tau ** 2
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    ends = t ** p - s ** p * (-k * (t - s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    log_ratio = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        log_ratio = log_ratio - (depth * math.log(k))
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_ratio.exp() * signs).tril() @ ends


def _adams_weights(sigma_next, nodes, lam_s, lam_t, tau):
    """``sa_solver.compute_stochastic_adams_b_coeffs`` (not the simple order-2 variant): the Lagrange basis
    integrals from the transposed Vandermonde system on the nodes, times alpha_t = sigma_next exp(lambda_t)."""
    order = nodes.shape[0]
    integrals = _exponential_integrals(lam_s, lam_t, order, tau)
    return sigma_next * lam_t.exp() * torch.linalg.solve(torch.vander(nodes, order, increasing=True).T, integrals)


def percent_to_sigma(sigma_of_timestep, percent):
    """``ModelSamplingDiscrete.percent_to_sigma``: sigma(float32 tensor((1 - percent) * 999.0)) as a Python float
    (999999999.9 at percent <= 0, 0.0 at percent >= 1)."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return sigma_of_timestep(torch.tensor((1.0 - percent) * 999.0)).item()


def sa_solver(model, x, sigmas, noise_sampler, tau_window, use_pece=False, eta=1.0, s_noise=1.0,
              predictor_order=3, corrector_order=4):
    """``sample_sa_solver`` (SA-Solver, arXiv 2309.05019) with its default tau: eta (1) where
    tau_window[0] >= sigma >= tau_window[1] (ComfyUI: percent_to_sigma(0.2), percent_to_sigma(0.8)), else 0.
    Each step corrects x with the corrector weights on the predictions so far (from the second step, not on the last
    step unless PECE, which then re-evaluates the corrected state and replaces the latest prediction), adds the
    previous predictor's noise, then predicts the next state; orders drop near the end when the schedule ends at 0.
    Returns the last prediction."""
    if len(sigmas) <= 1:
        return x
    ones, lambdas, n = x.new_ones([x.shape[0]]), sigmas.log().neg(), len(sigmas)

    def tau_at(sigma):
        return eta if eta > 0 and tau_window[0] >= sigma.item() >= tau_window[1] else 0.0

    def combine(preds, weights):
        return torch.tensordot(torch.stack(preds, dim=1), weights, dims=([1], [0]))

    x_pred, h, tau, noise, preds = x, 0.0, 0.0, 0.0, []
    taper = sigmas[-1].item() == 0
    for i in range(n - 1):
        denoised = model(x_pred, sigmas[i] * ones)
        preds = (preds + [denoised])[-max(predictor_order, corrector_order):]
        p_order = min(predictor_order, len(preds))
        c_order = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if taper:
            p_order, c_order = min(p_order, n - 2 - i), min(c_order, n - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            weights = _adams_weights(sigmas[i], lambdas[i - c_order + 1:i + 1], lambdas[i - 1], lambdas[i], tau)
            x = sigmas[i] / sigmas[i - 1] * (-(tau ** 2) * h).exp() * x + combine(preds[-c_order:], weights)
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * ones)
                preds[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
            continue
        tau = tau_at(sigmas[i + 1])
        weights = _adams_weights(sigmas[i + 1], lambdas[i - p_order + 1:i + 1], lambdas[i], lambdas[i + 1], tau)
        h = lambdas[i + 1] - lambdas[i]
        x_pred = sigmas[i + 1] / sigmas[i] * (-(tau ** 2) * h).exp() * x + combine(preds[-p_order:], weights)
        if tau > 0 and s_noise > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] \
                * (-2 * tau ** 2 * h).expm1().neg().sqrt() * s_noise
            x_pred = x_pred + noise
    return x_pred


FUNCTIONS = {f.__name__: f for f in (
    heunpp2, deis, er_sde, seeds_2, seeds_3, exp_heun_2_x0, exp_heun_2_x0_sde, sa_solver,
    cfgpp.euler_cfg_pp, cfgpp.euler_ancestral_cfg_pp, cfgpp.dpmpp_2s_ancestral_cfg_pp, cfgpp.dpmpp_2m_cfg_pp,
    cfgpp.res_multistep, cfgpp.res_multistep_ancestral, cfgpp.res_multistep_cfg_pp,
    cfgpp.res_multistep_ancestral_cfg_pp, cfgpp.gradient_estimation, cfgpp.gradient_estimation_cfg_pp)}
# ComfyUI name: (function here, options); none of them is in KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
EXTRA_SAMPLERS = {**{name: (name, {}) for name in FUNCTIONS}, "sa_solver_pece": ("sa_solver", {"pece": True})}


def sample_extra(funcname, options, model, x, sigmas, noise_sampler, sigma_of_timestep):
    """Runs one of the samplers above as ComfyUI's KSampler does (default options; sa_solver's tau window from
    ``percent_to_sigma`` on the model's ``sigma(timestep)``)."""
    if funcname == "sa_solver":
        window = (percent_to_sigma(sigma_of_timestep, 0.2), percent_to_sigma(sigma_of_timestep, 0.8))
        return sa_solver(model, x, sigmas, noise_sampler, window, use_pece=options.get("pece", False))
    return FUNCTIONS[funcname](model, x, sigmas, noise_sampler)

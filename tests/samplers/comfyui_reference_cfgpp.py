"""ComfyUI's samplers that can read the negative prompt's own prediction (its CFG++ ones) and their plain twins,
restated from ComfyUI's ``comfy/k_diffusion/sampling.py`` (02159d8) for SD 1.x: EPS on ``ModelSamplingDiscrete``,
so the half-logSNR is lambda = -log sigma, sigma comes back as exp(-lambda), alpha = sigma * exp(lambda) (1 up to
rounding, kept where ComfyUI multiplies by it) and the model's noise_scale is 1.

Every function is ``fn(model, x, sigmas, noise_sampler)``. ``model(x, sigma_batch)`` returns the CFG result; after
each call ``model.uncond_denoised`` is the negative prompt's denoised output of that same call. That is what
ComfyUI's CFG++ samplers get from their post-CFG hook (``set_model_options_post_cfg_function`` with
``disable_cfg1_optimization``, so the negative prompt is run even at cfg 1). ``noise_sampler(sigma, sigma_next)``
returns fresh noise shaped like x. Float operations keep ComfyUI's order, operands and dtypes."""
from __future__ import annotations

import torch


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """``get_ancestral_step``: the level to step down to and the noise to add back; eta 0 means (sigma_to, 0.)."""
    if not eta:
        return sigma_to, 0.0
    up = eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5
    up = up if up < sigma_to else sigma_to  # min(sigma_to, up), ties going to sigma_to
    return (sigma_to ** 2 - up ** 2) ** 0.5, up


def euler_ancestral_cfg_pp(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0):
    """``sample_euler_ancestral_cfg_pp``: the step lands on the guided prediction and carries on along the slope
    towards the negative prompt's prediction (scaled by alpha); the last step returns the guided prediction."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        if sigma_next == 0:
            x = denoised
            continue
        alpha = sigma * sigma.log().neg().exp()
        alpha_next = sigma_next * sigma_next.log().neg().exp()
        slope = (x - alpha * model.uncond_denoised) / sigma
        down, up = ancestral_step(sigma / alpha, sigma_next / alpha_next, eta)
        x = alpha_next * denoised + (alpha_next * down) * slope
        if eta > 0 and s_noise > 0:
            x = x + alpha_next * noise_sampler(sigma, sigma_next) * s_noise * up
    return x


def euler_cfg_pp(model, x, sigmas, noise_sampler):
    """``sample_euler_cfg_pp``: the ancestral one with eta = s_noise = 0 (it never draws noise)."""
    return euler_ancestral_cfg_pp(model, x, sigmas, noise_sampler, eta=0.0, s_noise=0.0)


def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0):
    """``sample_dpmpp_2s_ancestral_cfg_pp`` (its non-RF branch): DPM-Solver++(2S) run on the negative prompt's
    predictions (the midpoint call's guided output is thrown away), then the step's guidance vector (guided minus
    negative prediction of the first call) added whole, after the noise."""
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        uncond = model.uncond_denoised
        guidance = denoised - uncond
        down, up = ancestral_step(sigma, sigma_next, eta)
        if down == 0:
            x = x + (x - uncond) / sigma * (down - sigma)
        else:
            lam, lam_down = sigma.log().neg(), down.log().neg()
            h = lam_down - lam
            lam_mid = lam + 0.5 * h
            x_mid = (lam_mid.neg().exp() / lam.neg().exp()) * x - (-h * 0.5).expm1() * uncond
            model(x_mid, lam_mid.neg().exp() * ones)
            x = (lam_down.neg().exp() / lam.neg().exp()) * x - (-h).expm1() * model.uncond_denoised
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * up
        x = x + guidance
    return x


def dpmpp_2m_cfg_pp(model, x, sigmas, noise_sampler=None):
    """``sample_dpmpp_2m_cfg_pp``: x_next = D + mix + exp(-h) x, with mix = -exp(-h) U (first and last steps) or
    -exp(-h) U - expm1(-h) (D - U_old) / (2 r) (D guided, U the negative prompt's prediction, r = h_last / h)."""
    ones = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        uncond = model.uncond_denoised
        lam, lam_next = sigma.log().neg(), sigma_next.log().neg()
        h = lam_next - lam
        if old_uncond is None or sigma_next == 0:
            mix = -torch.exp(-h) * uncond
        else:
            r = (lam - sigmas[i - 1].log().neg()) / h
            mix = -torch.exp(-h) * uncond - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x


def res_multistep(model, x, sigmas, noise_sampler, eta=0.0, cfg_pp=False, s_noise=1.0):
    """``res_multistep`` (arXiv 2308.02157's second-order multistep exponential integrator): Euler on the first
    step and wherever sigma_down is 0, else x_next = exp(-h) x + h (b1 D + b2 D_old) with c2 = (lambda(sigma_prev)
    - lambda(old sigma_down)) / h, b2 = phi2(-h) / c2, b1 = phi1(-h) - b2, NaNs zeroed. The noise draw happens
    whenever sigma_next > 0, even at eta 0 (times sigma_up = 0). ``cfg_pp``: Euler lands on the guided prediction
    along the negative prompt's slope; the multistep step first adds the guidance (D - U) to x and then uses U,
    and the history keeps U."""
    ones = x.new_ones([x.shape[0]])
    old_down, old_pred = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        uncond = model.uncond_denoised if cfg_pp else None
        down, up = ancestral_step(sigma, sigma_next, eta)
        if down == 0 or old_pred is None:
            if cfg_pp:
                x = denoised + (x - uncond) / sigma * down
            else:
                x = x + (x - denoised) / sigma * (down - sigma)
        else:
            lam, lam_next = sigma.log().neg(), down.log().neg()
            lam_old, lam_prev = old_down.log().neg(), sigmas[i - 1].log().neg()
            h = lam_next - lam
            c2 = (lam_prev - lam_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b1 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2 / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
                x = h.neg().exp() * x + h * (b1 * uncond + b2 * old_pred)
            else:
                x = h.neg().exp() * x + h * (b1 * denoised + b2 * old_pred)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * up
        old_pred = uncond if cfg_pp else denoised
        old_down = down
    return x


def gradient_estimation(model, x, sigmas, noise_sampler=None, cfg_pp=False, ge_gamma=2.0):
    """``sample_gradient_estimation`` (openreview o2ND9v0CeK): an Euler step plus (gamma - 1) (d - d_old) dt from
    the second step on; the last step returns the prediction. ``cfg_pp``: d from the negative prompt's prediction
    and the Euler part written as D + d sigma_next."""
    ones = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones)
        d = (x - (model.uncond_denoised if cfg_pp else denoised)) / sigma
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = denoised
        else:
            x = denoised + d * sigma_next if cfg_pp else x + d * dt
            if i >= 1:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


def res_multistep_ancestral(model, x, sigmas, noise_sampler):
    """``sample_res_multistep_ancestral``: eta 1."""
    return res_multistep(model, x, sigmas, noise_sampler, eta=1.0)


def res_multistep_cfg_pp(model, x, sigmas, noise_sampler):
    """``sample_res_multistep_cfg_pp``: eta 0."""
    return res_multistep(model, x, sigmas, noise_sampler, eta=0.0, cfg_pp=True)


def res_multistep_ancestral_cfg_pp(model, x, sigmas, noise_sampler):
    """``sample_res_multistep_ancestral_cfg_pp``: eta 1."""
    return res_multistep(model, x, sigmas, noise_sampler, eta=1.0, cfg_pp=True)


def gradient_estimation_cfg_pp(model, x, sigmas, noise_sampler=None):
    """``sample_gradient_estimation_cfg_pp``."""
    return gradient_estimation(model, x, sigmas, noise_sampler, cfg_pp=True)

"""The A1111 1.10 reference for its own DDIM and PLMS, in A1111's variables (VP latents, alphas_cumprod, eps): written
from ``modules/sd_samplers_timesteps.py`` (``CompVisSampler.get_timesteps``, ``sample``, ``sample_img2img``,
``CFGDenoiserTimesteps`` / ``CompVisTimestepsDenoiser``) and ``modules/sd_samplers_timesteps_impl.py`` (``ddim``,
``plms``), with the per-image CPU generators of ``rng.ImageRNG`` for DDIM's eta noise. nanoldm runs the same
samplers in sigma space; this file never leaves the VP variables."""
from __future__ import annotations

import torch

from tests.samplers.a1111_reference import CFGDenoiser
from tests.samplers.a1111_unipc_reference import a1111_unipc


def get_timesteps(steps: int) -> torch.Tensor:
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)


def ddim(model, x, timesteps, alphas_cumprod, generators, eta=0.0):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].double()
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    s_in, s_x = x.new_ones([x.shape[0]]), x.new_ones((x.shape[0], 1, 1, 1))
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        sigma_t, sqrt_one_minus_at = sigmas[index].item() * s_x, sqrt_one_minus_alphas[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1.0 - a_prev - sigma_t**2).sqrt() * e_t
        noise = sigma_t * torch.cat([torch.randn((1, *x.shape[1:]), generator=g) for g in generators])
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x


def plms(model, x, timesteps, alphas_cumprod, generators=None):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].double()
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in, s_x = x.new_ones([x.shape[0]]), x.new_ones((x.shape[0], 1, 1, 1))
    old_eps = []

    def get_x_prev_and_pred_x0(x, e_t, index):
        a_t, a_prev = alphas[index].item() * s_x, alphas_prev[index].item() * s_x
        pred_x0 = (x - sqrt_one_minus_alphas[index].item() * s_x * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1.0 - a_prev).sqrt() * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts, t_next = timesteps[index].item() * s_in, timesteps[max(index - 1, 0)].item() * s_in
        e_t = model(x, ts)
        if len(old_eps) == 0:
            x_prev, _ = get_x_prev_and_pred_x0(x, e_t, index)
            e_t_prime = (e_t + model(x_prev, t_next)) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, _ = get_x_prev_and_pred_x0(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
    return x


def unipc(model, x, timesteps, alphas_cumprod, generators=None, is_img2img=False):
    """``sd_samplers_timesteps_impl.unipc``: steps = len(timesteps), img2img from t_start = timesteps[-1] / 1000
    + 1 / 1000 (float32, as there), A1111's defaults (bh1, order 3, lower order final)."""
    t_start = timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None
    return a1111_unipc(model, alphas_cumprod, x, len(timesteps), t_start=t_start)


FUNCTIONS = {"DDIM": ddim, "PLMS": plms, "UniPC": unipc}


def a1111_compvis_latents(unet, alphas_cumprod, name: str, steps: int, seeds: list[int], shape, cond, uncond,
                          cfg_scale: float, *, eta: float = 0.0, init_latents=None,
                          strength: float = 0.75) -> torch.Tensor:
    """``CompVisSampler.sample`` (txt2img) or, with ``init_latents``, ``sample_img2img``: the latents (B, C, h, w)
    A1111 decodes."""
    alphas_cumprod = alphas_cumprod.float()
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g) for g in generators])  # rng.ImageRNG.first()
    denoiser = CFGDenoiser(lambda x, t, cond: unet(x, t, cond))  # eps in, eps out: CFG on eps
    timesteps = get_timesteps(steps)
    if init_latents is None:
        x = noise
    else:
        t_enc = int(min(strength, 0.999) * steps)  # setup_img2img_steps
        a = alphas_cumprod[timesteps[t_enc]]
        x = init_latents * torch.sqrt(a) + noise * torch.sqrt(1 - a)
        timesteps = timesteps[:t_enc]
    extra = {"eta": eta} if name == "DDIM" else {"is_img2img": init_latents is not None} if name == "UniPC" else {}
    with torch.no_grad():
        return FUNCTIONS[name](lambda x, t: denoiser(x, t, cond, uncond, cfg_scale), x, timesteps, alphas_cumprod,
                               generators, **extra)

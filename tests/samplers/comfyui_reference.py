"""The ComfyUI reference: its KSampler path written from ComfyUI's source (``comfy/sample.py: prepare_noise``,
``comfy/samplers.py``: ``KSampler.calculate_sigmas``, the ``SCHEDULER_HANDLERS``, ``KSAMPLER.sample``,
``cfg_function``; ``comfy/model_sampling.py``: ``ModelSamplingDiscrete``, ``EPS``; ``comfy/k_diffusion/sampling.py``:
``default_noise_sampler``, ``BrownianTreeNoiseSampler``), with k-diffusion 0.1.1's sampler functions where
ComfyUI's are the same. Where they are not: ComfyUI's lms returns the prediction on its last step (done here), its
SDE samplers carry alpha_t factors equal to 1 up to rounding (not reproduced), and its DPM fast/adaptive run
between the schedule's own ends (passed here). ComfyUI's own samplers are restated from its source: ``ddpm``
(``generic_step_sampler`` + ``DDPMSampler_step``, in VP variables), ``lcm`` (``sample_lcm``) and ``uni_pc``
(``comfy/extra_samplers/uni_pc.py: sample_unipc`` with ``SigmaConvert``, on the UniPC class of
``a1111_unipc_reference``, which is the same code); the newer ones (heunpp2, deis, res_multistep, er_sde, seeds,
sa_solver, the CFG++ family) in ``comfyui_reference_extra`` and ``comfyui_reference_cfgpp``."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from tests.samplers import a1111_unipc_reference as unipc_reference
from tests.samplers.a1111_reference import sampling
from tests.samplers.comfyui_reference_extra import EXTRA_SAMPLERS, sample_extra

SAMPLERS = {  # ComfyUI name: (k-diffusion function, options)
    "euler": ("sample_euler", {}), "euler_ancestral": ("sample_euler_ancestral", {}),
    "heun": ("sample_heun", {}), "dpm_2": ("sample_dpm_2", {"discard": True}),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", {"discard": True}), "lms": ("sample_lms", {}),
    "dpm_fast": ("sample_dpm_fast", {}), "dpm_adaptive": ("sample_dpm_adaptive", {}),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", {}), "dpmpp_sde": ("sample_dpmpp_sde", {"brownian": True}),
    "dpmpp_2m": ("sample_dpmpp_2m", {}), "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", {"brownian": True}),
    "dpmpp_2m_sde_heun": ("sample_dpmpp_2m_sde", {"brownian": True, "solver_type": "heun"}),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", {"brownian": True}), "ddim": ("sample_euler", {}),
    "ddpm": ("ddpm", {}), "lcm": ("lcm", {}), "uni_pc": ("uni_pc", {"discard": True}),
    "uni_pc_bh2": ("uni_pc", {"discard": True, "variant": "bh2"}),
    "ipndm": ("ipndm", {}), "ipndm_v": ("ipndm_v", {}), **EXTRA_SAMPLERS,
    # the _gpu ones only keep their Brownian tree on x's device (cpu=False): on a CPU, the same samplers
    "dpmpp_sde_gpu": ("sample_dpmpp_sde", {"brownian": True}),
    "dpmpp_2m_sde_gpu": ("sample_dpmpp_2m_sde", {"brownian": True}),
    "dpmpp_2m_sde_heun_gpu": ("sample_dpmpp_2m_sde", {"brownian": True, "solver_type": "heun"}),
    "dpmpp_3m_sde_gpu": ("sample_dpmpp_3m_sde", {"brownian": True}),
}


def _keep_last(buffer_model, d_cur, max_order):
    """The samplers' history update: the last ``max_order - 1`` slopes, shifted in place."""
    if len(buffer_model) == max_order - 1:
        for k in range(max_order - 2):
            buffer_model[k] = buffer_model[k + 1]
        buffer_model[-1] = d_cur
    else:
        buffer_model.append(d_cur)


def comfy_ipndm(model, x, sigmas, max_order=4):
    """``sample_ipndm`` (from zju-pi/diff-sampler): fixed-step Adams-Bashforth on d."""
    s_in = x.new_ones([x.shape[0]])
    x_next, buffer_model = x, []
    for i in range(len(sigmas) - 1):
        t_cur, t_next, x_cur = sigmas[i], sigmas[i + 1], x_next
        denoised = model(x_cur, t_cur * s_in)
        d_cur = (x_cur - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x_cur + (t_next - t_cur) * d_cur
        elif order == 2:
            x_next = x_cur + (t_next - t_cur) * (3 * d_cur - buffer_model[-1]) / 2
        elif order == 3:
            x_next = x_cur + (t_next - t_cur) * (23 * d_cur - 16 * buffer_model[-1] + 5 * buffer_model[-2]) / 12
        else:
            x_next = x_cur + (t_next - t_cur) * (55 * d_cur - 59 * buffer_model[-1] + 37 * buffer_model[-2]
                                                 - 9 * buffer_model[-3]) / 24
        _keep_last(buffer_model, d_cur, max_order)
    return x_next


def comfy_ipndm_v(model, x, sigmas, max_order=4):
    """``sample_ipndm_v``: the variable-step coefficients from the spacing of the sigmas."""
    s_in = x.new_ones([x.shape[0]])
    x_next, t_steps, buffer_model = x, sigmas, []
    for i in range(len(sigmas) - 1):
        t_cur, t_next, x_cur = sigmas[i], sigmas[i + 1], x_next
        denoised = model(x_cur, t_cur * s_in)
        d_cur = (x_cur - denoised) / t_cur
        order = min(max_order, i + 1)
        h_n = t_next - t_cur
        if t_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x_cur + h_n * d_cur
        elif order == 2:
            h_n_1 = t_cur - t_steps[i - 1]
            coeff1, coeff2 = (2 + (h_n / h_n_1)) / 2, -(h_n / h_n_1) / 2
            x_next = x_cur + h_n * (coeff1 * d_cur + coeff2 * buffer_model[-1])
        elif order == 3:
            h_n_1, h_n_2 = t_cur - t_steps[i - 1], t_steps[i - 1] - t_steps[i - 2]
            temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            coeff1 = (2 + (h_n / h_n_1)) / 2 + temp
            coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp
            coeff3 = temp * h_n_1 / h_n_2
            x_next = x_cur + h_n * (coeff1 * d_cur + coeff2 * buffer_model[-1] + coeff3 * buffer_model[-2])
        else:
            h_n_1, h_n_2 = t_cur - t_steps[i - 1], t_steps[i - 1] - t_steps[i - 2]
            h_n_3 = t_steps[i - 2] - t_steps[i - 3]
            temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
            temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2 + (1 - h_n / (2 * (h_n + h_n_1))) * h_n
                     / (6 * (h_n + h_n_1 + h_n_2))) * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) \
                / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
            ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
            coeff1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
            coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + ratio) * temp2
            coeff3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio * (1 + h_n_2 / h_n_3)) * temp2
            coeff4 = -temp2 * ratio * h_n_1 / h_n_2
            x_next = x_cur + h_n * (coeff1 * d_cur + coeff2 * buffer_model[-1] + coeff3 * buffer_model[-2]
                                    + coeff4 * buffer_model[-3])
        _keep_last(buffer_model, d_cur, max_order)
    return x_next


def comfy_ddpm(model, x, sigmas, noise_sampler):
    """``generic_step_sampler`` with ``DDPMSampler_step``: the DDPM posterior step taken on the VP latent."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma, sigma_prev, eps = sigmas[i], sigmas[i + 1], (x - denoised) / sigmas[i]
        x = x / torch.sqrt(1.0 + sigma ** 2.0)
        alpha_cumprod = 1 / ((sigma * sigma) + 1)
        alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        x = (1.0 / alpha).sqrt() * (x - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            x += ((1 - alpha) * (1. - alpha_cumprod_prev) / (1. - alpha_cumprod)).sqrt() \
                * noise_sampler(sigma, sigma_prev)
            x *= torch.sqrt(1.0 + sigma_prev ** 2.0)
    return x


def comfy_lcm(model, x, sigmas, noise_sampler):
    """``sample_lcm`` with ``EPS.noise_scaling``: jump to the prediction, add sigma_next * fresh noise."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x


class SigmaConvert(unipc_reference.NoiseScheduleVP):
    """uni_pc's noise schedule in ComfyUI: the time is sigma, alpha = 1 / sqrt(1 + sigma^2) (alpha, std and
    lambda follow from log alpha as in the VP schedule)."""

    def __init__(self):
        pass

    def marginal_log_mean_coeff(self, sigma):
        return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


class _SigmaTimeUniPC(unipc_reference.UniPC):
    def get_model_input_time(self, t_continuous):  # ComfyUI feeds the model the sigma itself
        return t_continuous


def comfy_unipc(model, x, sigmas, variant):
    """``sample_unipc``: eps from the denoiser (``predict_eps_sigma``), the VP latent in and out."""
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001

    def eps_fn(x_vp, sigma):
        s = sigma.view(-1, 1, 1, 1)
        x_in = x_vp * ((s ** 2 + 1.0) ** 0.5)
        return (x_in - model(x_in, sigma)) / s

    ns = SigmaConvert()
    sampler = _SigmaTimeUniPC(eps_fn, ns, variant=variant)
    x = sampler.sample(x / torch.sqrt(1.0 + timesteps[0] ** 2.0), timesteps=timesteps,
                       order=min(3, len(timesteps) - 2), lower_order_final=True)
    return x / ns.marginal_alpha(timesteps[-1])


class ModelSampling:
    """``ModelSamplingDiscrete`` + ``EPS``: float64 betas, float32 tables, integer timesteps by nearest log sigma."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        sigmas = ((1 - alphas_cumprod.double()) / alphas_cumprod.double()) ** 0.5
        self.sigmas, self.log_sigmas = sigmas.float(), sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, t):
        t = torch.clamp(t.float(), min=0, max=len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def _normal(ms, steps, sgm=False):
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    ts = torch.linspace(start, end, steps + 1)[:-1] if sgm else torch.linspace(start, end, steps)
    return torch.FloatTensor([float(ms.sigma(t)) for t in ts] + [0.0])


def _simple(ms, steps):
    ss = len(ms.sigmas) / steps
    return torch.FloatTensor([float(ms.sigmas[-(1 + int(x * ss))]) for x in range(steps)] + [0.0])


def _ddim_uniform(ms, steps):
    ss, sigs, x = max(len(ms.sigmas) // steps, 1), [0.0], 1
    while x < len(ms.sigmas):
        sigs += [float(ms.sigmas[x])]
        x += ss
    return torch.FloatTensor(sigs[::-1])


def _beta(ms, steps, alpha=0.6, beta=0.6):
    total = len(ms.sigmas) - 1
    ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), alpha, beta) * total)
    sigs, last = [], -1
    for t in ts:
        if t != last:
            sigs += [float(ms.sigmas[int(t)])]
        last = t
    return torch.FloatTensor(sigs + [0.0])


def _kl_optimal(ms, steps):
    adj = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = adj.new_zeros(steps + 1)
    sigmas[:-1] = (adj * math.atan(float(ms.sigma_min)) + (1 - adj) * math.atan(float(ms.sigma_max))).tan_()
    return sigmas


def _linear_quadratic(ms, steps, threshold_noise=0.025):
    linear_steps = steps // 2
    linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    diff = linear_steps - threshold_noise * steps
    q_steps = steps - linear_steps
    qc = diff / (linear_steps * q_steps ** 2)
    lc = threshold_noise / linear_steps - 2 * diff / (q_steps ** 2)
    const = qc * (linear_steps ** 2)
    quad = [qc * (i ** 2) + lc * i + const for i in range(linear_steps, steps)]
    return torch.FloatTensor([1.0 - x for x in linear + quad + [1.0]]) * ms.sigma_max


SCHEDULERS = {
    "normal": _normal, "sgm_uniform": lambda ms, n: _normal(ms, n, sgm=True), "simple": _simple,
    "ddim_uniform": _ddim_uniform, "beta": _beta, "kl_optimal": _kl_optimal, "linear_quadratic": _linear_quadratic,
    "karras": lambda ms, n: sampling.get_sigmas_karras(n, float(ms.sigma_min), float(ms.sigma_max)),
    "exponential": lambda ms, n: sampling.get_sigmas_exponential(n, float(ms.sigma_min), float(ms.sigma_max)),
}


def comfyui_txt2img_latents(unet, alphas_cumprod, name: str, scheduler: str, steps: int, seed: int,
                            shape: tuple[int, ...], cond, uncond, cfg_scale: float) -> torch.Tensor:
    """ComfyUI's default graph up to the latents: Empty Latent Image (zeros) -> KSampler (denoise 1)."""
    ms = ModelSampling(alphas_cumprod)
    funcname, options = SAMPLERS[name]
    if options.get("discard"):
        sigmas = SCHEDULERS[scheduler](ms, steps + 1)
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    else:
        sigmas = SCHEDULERS[scheduler](ms, steps)
    noise = torch.randn(shape, generator=torch.manual_seed(seed), dtype=torch.float32)  # prepare_noise
    sigma0 = float(sigmas[0])
    max_denoise = math.isclose(float(ms.sigma_max), sigma0, rel_tol=1e-05) or sigma0 > float(ms.sigma_max)
    x = noise * torch.sqrt(1.0 + sigmas[0] ** 2.0) if max_denoise else noise * sigmas[0]

    def model(x, sigma):  # EPS + cfg_function on the denoised outputs, batch [uncond, cond]
        s = sigma.reshape(-1, 1, 1, 1)
        x_in = torch.cat([x, x]) / (torch.cat([s, s]) ** 2 + 1.0) ** 0.5
        t = ms.timestep(torch.cat([sigma, sigma])).float()
        eps = unet(x_in, t, torch.cat([uncond, cond]))
        denoised = torch.cat([x, x]) - eps * torch.cat([s, s])
        uncond_pred, cond_pred = denoised.chunk(2)
        model.uncond_denoised = uncond_pred  # what the CFG++ samplers' post-CFG hook reads
        return uncond_pred + (cond_pred - uncond_pred) * cfg_scale

    generator = torch.Generator("cpu").manual_seed(seed + 1)  # default_noise_sampler on the CPU
    kwargs = {"noise_sampler": lambda sigma, sigma_next: torch.randn(x.size(), generator=generator)}
    if options.get("brownian"):
        kwargs["noise_sampler"] = sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(),
                                                                    seed=seed)
    if "solver_type" in options:
        kwargs["solver_type"] = options["solver_type"]
    with torch.no_grad():
        if funcname == "ddpm":
            return comfy_ddpm(model, x, sigmas, kwargs["noise_sampler"])
        if funcname == "lcm":
            return comfy_lcm(model, x, sigmas, kwargs["noise_sampler"])
        if funcname == "uni_pc":
            return comfy_unipc(model, x, sigmas, options.get("variant", "bh1"))
        if funcname in ("ipndm", "ipndm_v"):
            return (comfy_ipndm if funcname == "ipndm" else comfy_ipndm_v)(model, x, sigmas)
        if name in EXTRA_SAMPLERS:
            return sample_extra(funcname, options, model, x, sigmas, kwargs["noise_sampler"], ms.sigma)
    func = getattr(sampling, funcname)
    with torch.no_grad():
        if funcname in ("sample_dpm_fast", "sample_dpm_adaptive"):
            sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
            extra = {"n": len(sigmas) - 1} if funcname == "sample_dpm_fast" else {}
            return func(model, x, sigma_min, sigmas[0], disable=True, **extra, **kwargs)
        if funcname == "sample_lms":  # ComfyUI's lms: the last step to 0 returns the prediction
            x = func(model, x, sigmas[:-1], disable=True)
            return model(x, sigmas[-2] * x.new_ones([x.shape[0]]))
        if funcname in ("sample_euler", "sample_heun", "sample_dpm_2", "sample_dpmpp_2m"):
            kwargs.pop("noise_sampler")
        return func(model, x, sigmas, disable=True, **kwargs)

"""ComfyUI's KSampler names: its samplers (``comfy/samplers.py``: ``KSAMPLER_NAMES``, ``ksampler``,
``sampler_object``) and schedulers (``SCHEDULER_HANDLERS``), mapped onto nanoldm's sampler functions and
schedules. Where ComfyUI's arithmetic is k-diffusion's, the function is shared with the A1111 list; where it is
not, it says so below.

    ComfyUI                function                    notes
    euler, ddim            sample_euler                ComfyUI's "ddim" is Euler
    euler_ancestral        sample_euler_ancestral      eta 1
    heun                   sample_heun
    heunpp2                sample_heunpp2              up to 3 calls per step, slopes weighed by sigma / sigma_0
    dpm_2                  sample_dpm_2                the next-to-last sigma dropped (DISCARD_PENULTIMATE_...)
    dpm_2_ancestral        sample_dpm_2_ancestral      the same, eta 1
    lms                    sample_lms                  the last step returns the prediction (k-diffusion
                                                       extrapolates)
    dpm_fast, dpm_adaptive sample_dpm_fast / _adaptive between the schedule's own ends, eta 0
    dpmpp_2s_ancestral     sample_dpmpp_2s_ancestral
    dpmpp_sde(_gpu)        sample_dpmpp_sde            Brownian tree; ComfyUI's half-logSNR form equals it to
                                                       rounding; ComfyUI's "_gpu" builds its tree on the model's
                                                       device: on a CPU the same, on CUDA its noise differs
                                                       (nanoldm's trees stay on the CPU)
    dpmpp_2m               sample_dpmpp_2m
    dpmpp_2m_sde(_heun)(_gpu)  sample_dpmpp_2m_sde     Brownian tree; midpoint (heun) solver
    dpmpp_3m_sde(_gpu)     sample_dpmpp_3m_sde         Brownian tree
    ddpm                   sample_ddpm                 ComfyUI steps the VP posterior; the same in sigma space
    lcm                    sample_lcm                  the model's own denoiser: no LCM boundary condition, as
                                                       ComfyUI without its ModelSamplingDiscrete "lcm" node
    ipndm, ipndm_v         sample_ipndm                fixed / variable-step Adams-Bashforth, up to order 4
    deis                   sample_deis                 Adams-Bashforth weights from DEIS's quadrature, order 3
    res_multistep          sample_res_multistep        eta 0; _ancestral: eta 1
    gradient_estimation    sample_gradient_estimation  gamma 2
    er_sde                 sample_er_sde               ER-SDE-Solver-3, ComfyUI's noise scale
    seeds_2, seeds_3       sample_seeds_2 / _3         eta 1, r = 1/2 (phi_1); r = 1/3, 2/3
    exp_heun_2_x0(_sde)    sample_seeds_2              r = 1, phi_2 weights; eta 0 (1)
    sa_solver(_pece)       sample_sa_solver            tau 1 between the 20% and 80% levels of the schedule
    *_cfg_pp               samplers/cfg_pp.py, ...     CFG++: euler, euler_ancestral, dpmpp_2s_ancestral,
                                                       dpmpp_2m, res_multistep(_ancestral), gradient_estimation
    uni_pc(_bh2)           sample_comfyui_unipc        UniPC on the scheduler's sigmas themselves (next-to-last
                                                       dropped, the final 0 replaced by 0.001), order
                                                       min(3, steps - 1), bh1 / bh2

Schedulers: normal, simple, sgm_uniform, karras, exponential and ddim_uniform are the schedules A1111 took from
ComfyUI (``schedules.py``); beta (sigma-table indices ``rint(ppf * 999)``, repeats dropped), kl_optimal (ending at
0) and linear_quadratic are ComfyUI's own, here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.ddpm import sample_ddpm
from nanoldm.samplers.dpm2 import sample_dpm_2, sample_dpm_2_ancestral
from nanoldm.samplers.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from nanoldm.samplers.dpmpp import sample_dpmpp_2m, sample_dpmpp_2s_ancestral
from nanoldm.samplers.dpmpp_sde import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_dpmpp_sde
from nanoldm.samplers.euler import sample_euler, sample_euler_ancestral
from nanoldm.samplers.cfg_pp import (sample_dpmpp_2m_cfg_pp, sample_dpmpp_2s_ancestral_cfg_pp,
                                     sample_euler_ancestral_cfg_pp, sample_euler_cfg_pp)
from nanoldm.samplers.deis import sample_deis
from nanoldm.samplers.heun import sample_heun, sample_heunpp2
from nanoldm.samplers.ipndm import sample_ipndm
from nanoldm.samplers.lcm import sample_lcm
from nanoldm.samplers.lms import sample_lms
from nanoldm.samplers.res_multistep import sample_gradient_estimation, sample_res_multistep
from nanoldm.samplers.sa_solver import sample_sa_solver
from nanoldm.samplers.schedules import SCHEDULES, without_penultimate
from nanoldm.samplers.seeds import sample_er_sde, sample_seeds_2, sample_seeds_3
from nanoldm.samplers.unipc import sample_unipc

UNIPC_FINAL_SIGMA = 0.001  # where ComfyUI's uni_pc stops in place of 0


def sample_comfyui_unipc(denoiser, x, sigmas, *, cond, noise=None, callback=None, variant: str = "bh1"):
    """ComfyUI's ``sample_unipc`` (``comfy/extra_samplers/uni_pc.py``): UniPC multistep whose time is the noise
    level itself, on the scheduler's sigmas with the final 0 replaced by 0.001 (the latent there is what ComfyUI
    decodes), order min(3, steps - 1), lower orders at the end. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending -> x at max(sigmas[-1], 0.001).
    """
    if len(sigmas) < 3:
        raise ValueError("ComfyUI's uni_pc needs at least 2 steps")
    sigmas = sigmas.clone()
    sigmas[-1] = sigmas[-1].clamp(min=UNIPC_FINAL_SIGMA)
    return sample_unipc(denoiser, x, sigmas, cond=cond, callback=callback, order=min(3, len(sigmas) - 2),
                        variant=variant)


@dataclass(frozen=True)
class ComfySampler:
    """One of ComfyUI's sampler names: the function, its keyword options, and how ComfyUI drives it."""

    name: str
    fn: Callable
    options: dict = field(default_factory=dict)
    discard_penultimate: bool = False
    brownian: bool = False
    tau_interval: bool = False  # SA-Solver: tau 1 between the schedule's 20% and 80% noise levels


COMFYUI_SAMPLERS: dict[str, ComfySampler] = {s.name: s for s in (  # KSAMPLER_NAMES + SAMPLER_NAMES, in order
    ComfySampler("euler", sample_euler),
    ComfySampler("euler_cfg_pp", sample_euler_cfg_pp),
    ComfySampler("euler_ancestral", sample_euler_ancestral),
    ComfySampler("euler_ancestral_cfg_pp", sample_euler_ancestral_cfg_pp),
    ComfySampler("heun", sample_heun),
    ComfySampler("heunpp2", sample_heunpp2),
    ComfySampler("exp_heun_2_x0", sample_seeds_2, {"eta": 0.0, "r": 1.0, "solver": "phi_2"}),
    ComfySampler("exp_heun_2_x0_sde", sample_seeds_2, {"r": 1.0, "solver": "phi_2"}),
    ComfySampler("dpm_2", sample_dpm_2, discard_penultimate=True),
    ComfySampler("dpm_2_ancestral", sample_dpm_2_ancestral, discard_penultimate=True),
    ComfySampler("lms", sample_lms, {"last_denoised": True}),
    ComfySampler("dpm_fast", sample_dpm_fast),
    ComfySampler("dpm_adaptive", sample_dpm_adaptive),
    ComfySampler("dpmpp_2s_ancestral", sample_dpmpp_2s_ancestral),
    ComfySampler("dpmpp_2s_ancestral_cfg_pp", sample_dpmpp_2s_ancestral_cfg_pp),
    ComfySampler("dpmpp_sde", sample_dpmpp_sde, brownian=True),
    ComfySampler("dpmpp_sde_gpu", sample_dpmpp_sde, brownian=True),
    ComfySampler("dpmpp_2m", sample_dpmpp_2m),
    ComfySampler("dpmpp_2m_cfg_pp", sample_dpmpp_2m_cfg_pp),
    ComfySampler("dpmpp_2m_sde", sample_dpmpp_2m_sde, brownian=True),
    ComfySampler("dpmpp_2m_sde_gpu", sample_dpmpp_2m_sde, brownian=True),
    ComfySampler("dpmpp_2m_sde_heun", sample_dpmpp_2m_sde, {"solver_type": "heun"}, brownian=True),
    ComfySampler("dpmpp_2m_sde_heun_gpu", sample_dpmpp_2m_sde, {"solver_type": "heun"}, brownian=True),
    ComfySampler("dpmpp_3m_sde", sample_dpmpp_3m_sde, brownian=True),
    ComfySampler("dpmpp_3m_sde_gpu", sample_dpmpp_3m_sde, brownian=True),
    ComfySampler("ddpm", sample_ddpm),
    ComfySampler("lcm", sample_lcm),
    ComfySampler("ipndm", sample_ipndm),
    ComfySampler("ipndm_v", sample_ipndm, {"variable": True}),
    ComfySampler("deis", sample_deis),
    ComfySampler("res_multistep", sample_res_multistep),
    ComfySampler("res_multistep_cfg_pp", sample_res_multistep, {"cfg_pp": True}),
    ComfySampler("res_multistep_ancestral", sample_res_multistep, {"eta": 1.0}),
    ComfySampler("res_multistep_ancestral_cfg_pp", sample_res_multistep, {"eta": 1.0, "cfg_pp": True}),
    ComfySampler("gradient_estimation", sample_gradient_estimation),
    ComfySampler("gradient_estimation_cfg_pp", sample_gradient_estimation, {"cfg_pp": True}),
    ComfySampler("er_sde", sample_er_sde),
    ComfySampler("seeds_2", sample_seeds_2),
    ComfySampler("seeds_3", sample_seeds_3),
    ComfySampler("sa_solver", sample_sa_solver, tau_interval=True),
    ComfySampler("sa_solver_pece", sample_sa_solver, {"pece": True}, tau_interval=True),
    ComfySampler("ddim", sample_euler),
    ComfySampler("uni_pc", sample_comfyui_unipc, discard_penultimate=True),
    ComfySampler("uni_pc_bh2", sample_comfyui_unipc, {"variant": "bh2"}, discard_penultimate=True),
)}


def get_comfyui_sampler(name: str) -> ComfySampler:
    spec = COMFYUI_SAMPLERS.get(str(name).strip())
    if spec is None:
        raise ValueError(f"unknown ComfyUI sampler {name!r}; valid names: {', '.join(COMFYUI_SAMPLERS)}")
    return spec


def comfy_percent_to_sigma(schedule: NoiseSchedule, percent: float) -> float:
    """``ModelSamplingDiscrete.percent_to_sigma``: the noise level at ``percent`` of the way through sampling,
    at timestep (1 - percent) * 999, log-linear between the table's entries (``NoiseSchedule.t_to_sigma``; ComfyUI
    interpolates in float32, 1e-7 apart)."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return float(schedule.t_to_sigma((1.0 - percent) * 999.0))


def sampler_options(spec: ComfySampler, schedule: NoiseSchedule) -> dict:
    """The keyword options ``spec.fn`` runs with; SA-Solver's tau interval comes from the model's schedule."""
    options = dict(spec.options)
    if spec.tau_interval:
        options["tau_range"] = (comfy_percent_to_sigma(schedule, 0.2), comfy_percent_to_sigma(schedule, 0.8))
    return options


# --- ComfyUI's own schedulers -------------------------------------------------------------------------------

def comfy_beta(schedule: NoiseSchedule, steps: int, alpha: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """``beta_scheduler``: the sigma-table entries at rint(ppf(1 - i/steps) * 999), repeats dropped, then 0."""
    from scipy.special import betaincinv

    sigmas, T = schedule.sigmas.float(), schedule.num_train_timesteps
    indices = np.rint(betaincinv(alpha, b, 1 - np.linspace(0, 1, steps, endpoint=False)) * (T - 1))
    levels, last = [], None
    for t in indices:
        if t != last:
            levels.append(float(sigmas[int(t)]))
        last = t
    return torch.tensor(levels + [0.0], dtype=torch.float32)


def comfy_kl_optimal(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """``kl_optimal_scheduler``: tan of arctan(sigma) stepped evenly from sigma_max to sigma_min, then 0."""
    sigmas = schedule.sigmas.float()
    ramp = torch.arange(steps, dtype=torch.float).div_(max(steps - 1, 1))
    levels = torch.zeros(steps + 1)
    levels[:-1] = (ramp * math.atan(sigmas[0].item()) + (1 - ramp) * math.atan(sigmas[-1].item())).tan_()
    return levels


def comfy_linear_quadratic(schedule: NoiseSchedule, steps: int, threshold: float = 0.025) -> torch.Tensor:
    """``linear_quadratic_schedule`` (made for flow models): linear, then quadratic, in units of sigma_max."""
    sigma_max = schedule.sigmas.float()[-1]
    if steps == 1:
        return torch.tensor([1.0, 0.0]) * sigma_max
    linear_steps = steps // 2
    linear = [i * threshold / linear_steps for i in range(linear_steps)]
    diff, q_steps = linear_steps - threshold * steps, steps - linear_steps
    quad_coef = diff / (linear_steps * q_steps ** 2)
    lin_coef = threshold / linear_steps - 2 * diff / q_steps ** 2
    const = quad_coef * linear_steps ** 2
    quadratic = [quad_coef * i ** 2 + lin_coef * i + const for i in range(linear_steps, steps)]
    return torch.FloatTensor([1.0 - x for x in linear + quadratic + [1.0]]) * sigma_max


COMFYUI_SCHEDULERS: dict[str, Callable[[NoiseSchedule, int], torch.Tensor]] = {
    "simple": SCHEDULES["Simple"], "sgm_uniform": SCHEDULES["SGM Uniform"], "karras": SCHEDULES["Karras"],
    "exponential": SCHEDULES["Exponential"], "ddim_uniform": SCHEDULES["DDIM"], "beta": comfy_beta,
    "normal": SCHEDULES["Normal"], "linear_quadratic": comfy_linear_quadratic, "kl_optimal": comfy_kl_optimal,
}


def comfyui_sigmas(spec: ComfySampler, scheduler: str, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """``KSampler.calculate_sigmas`` (the penultimate level dropped for DPM2). Shapes: -> (k + 1,) float32."""
    make = COMFYUI_SCHEDULERS.get(str(scheduler).strip())
    if make is None:
        raise ValueError(f"unknown ComfyUI scheduler {scheduler!r}; valid names: {', '.join(COMFYUI_SCHEDULERS)}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if spec.discard_penultimate:
        return without_penultimate(make, schedule, int(steps))
    return make(schedule, int(steps))


def comfyui_img2img_sigmas(spec: ComfySampler, scheduler: str, schedule: NoiseSchedule, steps: int,
                           denoise: float) -> torch.Tensor:
    """``KSampler.set_steps``: below denoise 1, the last ``steps`` steps of a schedule of int(steps / denoise)."""
    if denoise > 0.9999:
        return comfyui_sigmas(spec, scheduler, schedule, steps)
    if denoise <= 0:
        return torch.zeros(1)
    return comfyui_sigmas(spec, scheduler, schedule, int(steps / denoise))[-(steps + 1):]


A1111_TO_COMFYUI = {  # A1111's names of the same algorithms, accepted under like="comfyui" too
    "Euler": "euler", "Euler a": "euler_ancestral", "Heun": "heun", "DPM2": "dpm_2", "DPM2 a": "dpm_2_ancestral",
    "LMS": "lms", "DPM fast": "dpm_fast", "DPM adaptive": "dpm_adaptive", "DPM++ 2S a": "dpmpp_2s_ancestral",
    "DPM++ SDE": "dpmpp_sde", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M SDE": "dpmpp_2m_sde",
    "DPM++ 2M SDE Heun": "dpmpp_2m_sde_heun", "DPM++ 3M SDE": "dpmpp_3m_sde", "DDIM": "ddim",
}
DEFAULT_SCHEDULER = "normal"  # the scheduler of ComfyUI's default workflow; A1111's "Automatic" means it here


def find_comfyui(sampler: str, scheduler: str = "Automatic") -> tuple[ComfySampler, str]:
    """The ComfyUI sampler and scheduler names of a request (A1111's sampler names map to ComfyUI's; "Automatic"
    is ``DEFAULT_SCHEDULER``); ValueError listing the valid names otherwise."""
    spec = get_comfyui_sampler(A1111_TO_COMFYUI.get(str(sampler).strip(), sampler))
    scheduler = DEFAULT_SCHEDULER if str(scheduler).strip().lower() == "automatic" else str(scheduler).strip()
    if scheduler not in COMFYUI_SCHEDULERS:
        raise ValueError(f"unknown ComfyUI scheduler {scheduler!r}; valid names: {', '.join(COMFYUI_SCHEDULERS)}")
    return spec, scheduler

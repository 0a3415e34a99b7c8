"""Schedule types: how a sampler's ``steps`` become noise levels, under the names A1111 1.10 gives them
("Schedule type"). Each returns a descending float32 (steps + 1,) tensor ending in 0.

    name              sigmas (n = steps; sigma_min, sigma_max: the model's smallest and largest sigma)
    Uniform           the model's sigmas at n timesteps evenly spaced from T-1 to 0 (log sigma interpolated)
    Karras            Karras et al. 2022 eq. 5, rho 7
    Exponential       evenly spaced in log sigma
    Polyexponential   log sigma on a ramp^rho, rho 1 (Exponential with rho = 1)
    SGM Uniform       n timesteps of n + 1 evenly spaced from sigma_max's to sigma_min's, the last dropped
    KL Optimal        tan of n + 1 evenly spaced angles from arctan(sigma_max) to arctan(sigma_min) (no 0 appended)
    Align Your Steps  NVIDIA's 11 SD 1.5 levels, interpolated log-linearly to n (Sabour et al. 2024)
    Simple            every (T / n)-th training sigma, from the top
    Normal            n timesteps evenly spaced from sigma_max's to sigma_min's (both ends kept)
    DDIM              the training sigmas at t = 1, 1 + T // n, ... (DDIM's uniform skip), reversed
    Beta              sigma_min + ppf_Beta(0.6, 0.6)(1 - i / (n - 1)) (sigma_max - sigma_min) (Lee et al. 2024)

"Automatic" is not a schedule: it means the sampler's own default (``samplers/a1111.py``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.sigmas import karras_sigmas

AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
BETA_ALPHA = BETA_BETA = 0.6  # A1111's defaults for the Beta schedule's distribution


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.float(), sigmas.new_zeros(1).float()])


def _float32_sigmas(schedule: NoiseSchedule) -> torch.Tensor:
    """The training sigmas as the tools hold them: float32 (T,)."""
    return schedule.sigmas.float()


def _t_to_sigma(schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor:
    """k-diffusion's DiscreteSchedule.t_to_sigma on float32 tables: log sigma interpolated between integers."""
    log_sigmas = _float32_sigmas(schedule).log()
    t = t.float()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def _sigma_to_t(schedule: NoiseSchedule, sigma: float) -> torch.Tensor:
    return schedule.sigma_to_t(torch.tensor(sigma, dtype=torch.float64)).float()


def uniform(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    T = schedule.num_train_timesteps
    return _append_zero(_t_to_sigma(schedule, torch.linspace(T - 1, 0, steps)))


def karras(schedule: NoiseSchedule, steps: int, rho: float = 7.0) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    return karras_sigmas(s[0].item(), s[-1].item(), steps, rho)


def exponential(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    return _append_zero(torch.linspace(math.log(s[-1].item()), math.log(s[0].item()), steps).exp())


def polyexponential(schedule: NoiseSchedule, steps: int, rho: float = 1.0) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    lo, hi = math.log(s[0].item()), math.log(s[-1].item())
    ramp = torch.linspace(1, 0, steps) ** rho
    return _append_zero(torch.exp(ramp * (hi - lo) + lo))


def _timestep_range(schedule: NoiseSchedule, steps: int, *, drop_last: bool) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    start, end = _sigma_to_t(schedule, s[-1].item()), _sigma_to_t(schedule, s[0].item())
    t = torch.linspace(start.item(), end.item(), steps + 1)[:-1] if drop_last else torch.linspace(
        start.item(), end.item(), steps)
    return _append_zero(torch.stack([_t_to_sigma(schedule, ti) for ti in t]))


def sgm_uniform(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return _timestep_range(schedule, steps, drop_last=True)


def normal(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return _timestep_range(schedule, steps, drop_last=False)


def kl_optimal(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    alpha_min, alpha_max = torch.arctan(s[0]), torch.arctan(s[-1])
    i = torch.arange(steps + 1)
    return torch.tan(i / steps * alpha_min + (1.0 - i / steps) * alpha_max)  # ends at sigma_min, as A1111's does


def align_your_steps(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    if steps == len(AYS_SD15):
        return torch.tensor([*AYS_SD15, 0.0], dtype=torch.float32)
    xs = np.linspace(0, 1, len(AYS_SD15))
    ys = np.log(AYS_SD15[::-1])
    levels = np.exp(np.interp(np.linspace(0, 1, steps), xs, ys))[::-1].copy()
    return torch.tensor([*levels, 0.0], dtype=torch.float32)


def simple(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    stride = len(s) / steps
    return torch.tensor([float(s[-(1 + int(i * stride))]) for i in range(steps)] + [0.0], dtype=torch.float32)


def ddim(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    s = _float32_sigmas(schedule)
    stride = max(len(s) // steps, 1)
    levels = [float(s[t]) for t in range(1, len(s), stride)][::-1]
    return torch.tensor(levels + [0.0], dtype=torch.float32)


def beta(schedule: NoiseSchedule, steps: int, alpha: float = BETA_ALPHA, b: float = BETA_BETA) -> torch.Tensor:
    from scipy.special import betaincinv  # here, not at the top: scipy's import would slow every `nanoldm --help`

    s = _float32_sigmas(schedule)
    lo, hi = s[0].item(), s[-1].item()
    quantiles = betaincinv(alpha, b, 1 - np.linspace(0, 1, steps))  # the Beta distribution's ppf
    return torch.tensor([lo + q * (hi - lo) for q in quantiles] + [0.0], dtype=torch.float32)


SCHEDULES = {
    "Uniform": uniform, "Karras": karras, "Exponential": exponential, "Polyexponential": polyexponential,
    "SGM Uniform": sgm_uniform, "KL Optimal": kl_optimal, "Align Your Steps": align_your_steps, "Simple": simple,
    "Normal": normal, "DDIM": ddim, "Beta": beta,
}
SCHEDULE_NAMES: tuple[str, ...] = ("Automatic", *SCHEDULES)
_ALIASES = {"sgmuniform": "SGM Uniform"}


def schedule_key(name: str) -> str:
    """A1111's label or snake_case name -> the label ("karras" -> "Karras", "sgm_uniform" -> "SGM Uniform")."""
    key = str(name).strip().lower().replace("_", " ")
    for label in SCHEDULE_NAMES:
        if label.lower() == key:
            return label
    if key.replace(" ", "") in _ALIASES:
        return _ALIASES[key.replace(" ", "")]
    raise ValueError(f"unknown schedule type {name!r}; valid names: {', '.join(SCHEDULE_NAMES)}")


def schedule_sigmas(name: str, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """Sigmas of the schedule type ``name`` (not "Automatic"). Shapes: -> (steps + 1,) float32, descending."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    return SCHEDULES[schedule_key(name)](schedule, int(steps))


def without_penultimate(make, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """``make(schedule, steps + 1)`` with its next-to-last level dropped, so that ``steps`` steps run (A1111's and
    ComfyUI's ``discard_next_to_last_sigma`` for DPM2 and others). Shapes: -> (steps + 1,)."""
    sigmas = make(schedule, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])

"""The discrete noise schedule of DDPM (Ho et al. 2020) and its continuous "sigma" view (Karras et al. 2022).

Notation (Ho et al. 2020 -> names here):

    beta_t            betas[t]              variance added by forward step t, t = 0 .. T-1
    alpha_bar_t       alphas_cumprod[t]     prod_{s <= t} (1 - beta_s)
    x_t               q_sample(x0, t, eps)  sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps     ("VP space")
    sigma_t           sigmas[t]             sqrt((1 - alpha_bar_t) / alpha_bar_t)
    x_sigma           x_t / sqrt(alpha_bar_t) = x0 + sigma_t eps                                  ("sigma space")

Samplers work in sigma space; training and the ``posterior`` work in VP space. All tables are float64 on the CPU;
results come back in the dtype and on the device of the tensors passed in.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch

from nanoldm.config import ScheduleConfig

SPACINGS = ("leading", "trailing", "linspace")


def make_betas(kind: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Betas of a named schedule, float64 (T,).

    ``linear``: DDPM's; ``scaled_linear``: linear in sqrt(beta) (Stable Diffusion); ``cosine``: Nichol & Dhariwal
    2021 eq. 17, alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2) with s = 0.008, each beta capped at 0.999.
    """
    T = num_train_timesteps
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    if kind == "cosine":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)],
                            dtype=torch.float64)
    raise ValueError(f"unknown beta_schedule {kind!r}: expected linear, scaled_linear or cosine")


@dataclass(frozen=True)
class StepPlacement:
    """Where a scheduler config puts the sampling steps (diffusers' ``timestep_spacing``, ``steps_offset``,
    ``use_karras_sigmas``); ``timestep_spacing`` None: each sampler's own default."""

    timestep_spacing: str | None = None
    steps_offset: int = 1
    use_karras_sigmas: bool = False

    def __post_init__(self):
        if self.timestep_spacing is not None and self.timestep_spacing not in SPACINGS:
            raise ValueError(f"unknown timestep_spacing {self.timestep_spacing!r}: expected one of "
                             f"{', '.join(SPACINGS)}")


class NoiseSchedule:
    """Betas and everything derived from them: the forward process, its posterior, prediction conversions,
    and the map between integer timesteps t and noise levels sigma; ``placement``: where sampling steps go.

    Shapes: t is (B,) integer for the VP-space methods; x0, x_t, eps, v are (B, ...) alike.
    """

    def __init__(self, betas: torch.Tensor, placement: StepPlacement = StepPlacement()):
        self.placement = placement
        self.betas = betas.to(torch.float64)  # (T,)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # (T,)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()  # (T,) increasing
        self.log_sigmas = self.sigmas.log()
        self._log_sigma_list = self.log_sigmas.tolist()  # for sigma_to_t_float

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> "NoiseSchedule":
        return cls(make_betas(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end),
                   StepPlacement(cfg.timestep_spacing, cfg.steps_offset, cfg.use_karras_sigmas))

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of integer steps ``t`` (float32, t's shape)."""
        ab = self.alphas_cumprod.to(t.device)[t]
        return (ab / (1.0 - ab)).float()

    # --- forward process and its posterior (VP space) ------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x0) = N(sqrt(ab_t) x0, (1 - ab_t) I) in closed form (Ho et al. 2020 eq. 4)."""
        ab = _at(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor):
        """q(x_{t-1} | x_t, x0) = N(mean, variance) (Ho et al. 2020 eq. 6-7).

        mean = sqrt(ab_{t-1}) beta_t / (1 - ab_t) x0 + sqrt(1 - beta_t) (1 - ab_{t-1}) / (1 - ab_t) x_t,
        variance = beta_t (1 - ab_{t-1}) / (1 - ab_t). The variance is 0 at t = 0, so its log is clipped to the
        value at t = 1 there (as guided-diffusion does).

        Shapes: x_t, x0 (B, ...), t (B,) -> mean (B, ...), variance and log_variance_clipped (B, 1, ...).
        """
        ab, ab_prev, beta = (_at(buf, t, x0) for buf in (self.alphas_cumprod, self.alphas_cumprod_prev, self.betas))
        mean = (ab_prev.sqrt() * beta * x0 + (1.0 - beta).sqrt() * (1.0 - ab_prev) * x_t) / (1.0 - ab)
        variance_table = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)  # (T,)
        log_variance_table = torch.cat([variance_table[1:2], variance_table[1:]]).log()
        return mean, _at(variance_table, t, x0), _at(log_variance_table, t, x0)

    # --- what the network predicts: eps, x0 or v (Salimans & Ho 2022) ---------------------------------

    def eps_to_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = _at(self.alphas_cumprod, t, x_t)
        return (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()

    def x0_to_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        ab = _at(self.alphas_cumprod, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1.0 - ab).sqrt()

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0 (Salimans & Ho 2022, sec. 4)."""
        ab = _at(self.alphas_cumprod, t, x0)
        return ab.sqrt() * noise - (1.0 - ab).sqrt() * x0

    def v_to_x0(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ab = _at(self.alphas_cumprod, t, x_t)
        return ab.sqrt() * x_t - (1.0 - ab).sqrt() * v

    def v_to_eps(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ab = _at(self.alphas_cumprod, t, x_t)
        return (1.0 - ab).sqrt() * x_t + ab.sqrt() * v

    # --- timesteps <-> sigmas ------------------------------------------------------------------------

    def sigma_to_t(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Fractional timestep of a noise level: piecewise-linear interpolation of t in log(sigma), clamped
        to [0, T-1]. Computed in float64, so a sigma from the table maps back to its integer t.

        Shapes: any -> same, float64, on sigma's device.
        """
        sigma = torch.as_tensor(sigma)
        log_sigma = sigma.detach().cpu().to(torch.float64).clamp_min(1e-10).log()
        low = (torch.searchsorted(self.log_sigmas, log_sigma, right=True) - 1).clamp(0, len(self.sigmas) - 2)
        lo, hi = self.log_sigmas[low], self.log_sigmas[low + 1]
        w = ((log_sigma - lo) / (hi - lo)).clamp(0.0, 1.0)
        return (low + w).to(sigma.device)

    def sigma_to_t_float(self, sigma: float) -> float:
        """``sigma_to_t`` of one noise level, the same float64 arithmetic (torch's log, then the search and the
        interpolation in Python floats): a few microseconds where the tensor form costs a dozen tensor calls, and
        the Denoiser asks once per model call."""
        log_sigma = torch.tensor(max(sigma, 1e-10), dtype=torch.float64).log().item()
        table = self._log_sigma_list
        low = min(max(bisect.bisect_right(table, log_sigma) - 1, 0), len(table) - 2)
        lo, hi = table[low], table[low + 1]
        return low + min(max((log_sigma - lo) / (hi - lo), 0.0), 1.0)

    def t_to_sigma(self, t: torch.Tensor | float, *, log_space: bool = True) -> torch.Tensor:
        """Noise level at a (possibly fractional) timestep, interpolating log(sigma) linearly between integer
        timesteps: the inverse of ``sigma_to_t``. ``log_space=False`` interpolates sigma itself, as diffusers'
        schedulers do for fractional timesteps (equal at integers; in between they differ by up to 1.5% below t = 1,
        0.03% above t = 10).

        Shapes: any -> same, float64, on t's device.
        """
        t = torch.as_tensor(t)
        tt = t.detach().cpu().to(torch.float64).clamp(0, len(self.sigmas) - 1)
        low = tt.floor().long().clamp(max=len(self.sigmas) - 2)
        w = tt - low
        table = self.log_sigmas if log_space else self.sigmas
        sigma = (1.0 - w) * table[low] + w * table[low + 1]
        return (sigma.exp() if log_space else sigma).to(t.device)

    def timesteps(self, steps: int, spacing: str = "leading", steps_offset: int = 0) -> torch.Tensor:
        """Descending inference timesteps, float64 (steps,), as diffusers' ``timestep_spacing``
        (Lin et al. 2024, table 2) defines them for DDIM, DDPM and the Euler family:

        - ``leading``:  (T // steps) * [steps-1, ..., 1, 0] + steps_offset   (SD 1.x: steps_offset = 1)
        - ``trailing``: round(T - i * T / steps) - 1, i = 0 .. steps-1       (always starts at T-1)
        - ``linspace``: steps points evenly spaced from T-1 down to 0, NOT rounded (the Euler family uses them
          as they are; DDIM, DDPM and DPM-Solver round them).
        """
        T = self.num_train_timesteps
        if not 1 <= steps <= T:
            raise ValueError(f"steps must be between 1 and {T}, got {steps}")
        i = torch.arange(steps, dtype=torch.float64)
        if spacing == "leading":
            return (i * (T // steps)).flip(0) + steps_offset
        if spacing == "trailing":
            return (T - i * (T / steps)).round() - 1
        if spacing == "linspace":  # numpy's linspace arithmetic: i * step, the last point exactly T - 1
            if steps == 1:
                return torch.zeros(1, dtype=torch.float64)
            t = i * ((T - 1) / (steps - 1))
            t[-1] = T - 1
            return t.flip(0)
        raise ValueError(f"unknown timestep spacing {spacing!r}: expected one of {', '.join(SPACINGS)}")


def _at(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] shaped to broadcast against x. Shapes: table (T,), t (B,), x (B, ...) -> (B, 1, ..., 1)."""
    t = torch.as_tensor(t).reshape(-1)
    values = table[t.detach().cpu().long()]
    return values.to(device=x.device, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))

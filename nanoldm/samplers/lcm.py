"""LCM (Luo et al. 2023, "Latent Consistency Models") as A1111 1.10 runs it (``modules/sd_samplers_lcm.py``):
the model is asked at the 50 timesteps LCM was distilled on (19, 39, ..., 999), its output goes through the
consistency model's boundary condition (Song et al. 2023, eq. 7: c_skip x + c_out D with sigma_data = 0.5 and
the timestep scaled by 10), and each step jumps to that estimate and re-noises it to the next level.

``lcm_schedule`` is the training schedule restricted to those 50 timesteps: A1111's LCM samples with it in
place of the model's (its sigmas, and every schedule type built from them)."""
from __future__ import annotations

import torch

from nanoldm.diffusion.schedule import NoiseSchedule

LCM_ORIGINAL_STEPS = 50  # the timesteps an LCM was distilled on: every T / 50-th, ending at T - 1
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


def lcm_schedule(schedule: NoiseSchedule) -> NoiseSchedule:
    """The schedule whose step i is the training schedule's step (i + 1) * T / 50 - 1 (alphas_cumprod kept,
    as float32 like A1111's table). Shapes: T steps -> 50 steps."""
    skip = schedule.num_train_timesteps // LCM_ORIGINAL_STEPS
    kept = schedule.alphas_cumprod.float().double()[skip - 1::skip]  # (50,) t = skip-1, 2*skip-1, ..., T-1
    betas = 1 - kept / torch.cat([kept.new_ones(1), kept[:-1]])  # the betas whose cumulative product is `kept`
    return NoiseSchedule(betas)


class LCMTimesteps:
    """sigma -> the UNet's timestep: the nearest (in log sigma) of the 50 LCM steps, as a training timestep."""

    def __init__(self, lcm: NoiseSchedule, num_train_timesteps: int):
        self.log_sigmas = lcm.sigmas.float().log()
        self.skip = num_train_timesteps // LCM_ORIGINAL_STEPS
        self._known: dict[float, float] = {}

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        """Shapes: (B,) -> (B,) float64."""
        index = (sigma.float().log()[None, :] - self.log_sigmas[:, None]).abs().argmin(dim=0)
        return (index * self.skip + (self.skip - 1)).double()

    def at(self, sigma: float) -> float:
        """The same for one noise level (the Denoiser's one-level path, and the boundary condition's: each level
        is asked twice a step, so the answers are kept)."""
        if sigma not in self._known:
            if len(self._known) > 4096:
                self._known.clear()
            self._known[sigma] = float(self(torch.tensor([sigma], dtype=torch.float64))[0])
        return self._known[sigma]


class LCMBoundary:
    """``denoiser`` (asked at LCM timesteps) -> the consistency function c_skip(t) x + c_out(t) D(x)."""

    def __init__(self, denoiser, timesteps: LCMTimesteps):
        self.denoiser, self.timesteps = denoiser, timesteps

    def __call__(self, x: torch.Tensor, sigma, cond) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        if sigma.numel() == 1:  # one level for the batch (integer timesteps: the same values)
            t = torch.full((x.shape[0], 1, 1, 1), self.timesteps.at(float(sigma)) * TIMESTEP_SCALING,
                           dtype=x.dtype, device=x.device)
        else:
            sigma_b = sigma.detach().cpu().reshape(-1)
            t = (self.timesteps(sigma_b) * TIMESTEP_SCALING).to(x.device, x.dtype).reshape(-1, 1, 1, 1)
        c_skip = SIGMA_DATA**2 / (t**2 + SIGMA_DATA**2)
        c_out = t / (t**2 + SIGMA_DATA**2) ** 0.5
        return c_out * self.denoiser(x, sigma, cond) + c_skip * x


def sample_lcm(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Jump to the consistency estimate, then fresh noise ``noise()`` up to the next level (none after the last).
    ``denoiser`` is an ``LCMBoundary``. Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) -> x at 0."""
    for i in range(len(sigmas) - 1):
        denoised = denoiser(x, sigmas[i], cond)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise()
        if callback is not None:
            callback(i, x, denoised)
    return x

"""A1111's own DDIM, PLMS and UniPC (``modules/sd_samplers_timesteps.py``, ``sd_samplers_timesteps_impl.py``): the
"CompVis" samplers, which walk timesteps instead of a sigma schedule.

- Timesteps: 1, 1 + k, 1 + 2k, ... below T + 1 with k = T // steps (T = 1000 training steps), clipped to T - 1
  (``CompVisSampler.get_timesteps``). There can be more of them than ``steps`` (30 steps: k = 33, 31 timesteps).
- The loop runs from the top timestep down and makes one step fewer than there are timesteps: it ends at t = 1,
  not at 0, and the latent there, with the little noise t = 1 leaves, is what gets decoded.
- The starting latent is unit noise in the VP parametrisation (x = sqrt(abar) x0 + sqrt(1 - abar) eps);
  img2img noises the image to the timestep *after* the first one it runs (A1111's off-by-one, kept).
- UniPC (``samplers/unipc.py``) takes only the number of those timesteps (and img2img its start, the last one run
  / 1000 + 1 / 1000) and runs that many steps on its own continuous grid, from t = 1 to t = 1 / N, with fractional
  UNet timesteps; A1111's defaults: variant bh1, order 3, lower order at the end.

The samplers here run in sigma space like every other (x / sqrt(abar), sigma^2 = (1 - abar) / abar), where both
updates are exact rewrites of A1111's VP ones: DDIM's ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev -
s^2) eps + s z`` is an Euler ancestral step with eta (``samplers/ddim.py``), PLMS's is an Euler step with a
combined eps. Plans (``pipelines/conventions.py``) scale in and out of the VP latent at the ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.ddim import sample_ddim
from nanoldm.samplers.unipc import sample_unipc


def a1111_timesteps(steps: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """``CompVisSampler.get_timesteps`` (without "discard penultimate sigma"). Shapes: -> (n,) int64 ascending."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    stride = max(num_train_timesteps // steps, 1)
    return (torch.arange(0, num_train_timesteps, stride) + 1).clamp(0, num_train_timesteps - 1)


def timestep_sigmas(schedule: NoiseSchedule, timesteps: torch.Tensor) -> torch.Tensor:
    """The noise levels of ascending ``timesteps``, descending, as a sampler walks them. Shapes: (n,) -> (n,)
    float64."""
    return schedule.sigmas[timesteps.flip(0)]


def sample_plms(denoiser, x, sigmas, *, cond, noise=None, callback=None):
    """Pseudo linear multistep (Liu et al. 2022, "PNDM"), as CompVis' and A1111's ``plms``: the first step is
    a pseudo improved Euler (Heun) step on eps, the next ones Adams-Bashforth on the eps of the last 2, 3, 4
    steps; each moves x by (sigma_next - sigma) * eps'. ``noise`` is unused.

    Shapes: x (B, C, h, w) at sigmas[0], sigmas (steps + 1,) descending, all > 0 -> x at sigmas[-1].
    """
    old_eps: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma, cond)
        eps = (x - denoised) / sigma
        if not old_eps:
            x_next = x + (sigma_next - sigma) * eps
            eps_prime = (eps + (x_next - denoiser(x_next, sigma_next, cond)) / sigma_next) / 2
        elif len(old_eps) == 1:
            eps_prime = (3 * eps - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            eps_prime = (23 * eps - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            eps_prime = (55 * eps - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        prediction = x - sigma * eps_prime  # the x0 this step moves towards (A1111's callback's "denoised")
        x = x + (sigma_next - sigma) * eps_prime
        old_eps = [*old_eps, eps][-3:]
        if callback is not None:
            callback(i, x, prediction)
    return x


@dataclass(frozen=True)
class TimestepSampler:
    """One of A1111's CompVis samplers: ``fn`` runs on :func:`timestep_sigmas`, or (``continuous``) on UniPC's
    own grid; ``eta``: it takes DDIM's eta (A1111's "Eta DDIM", default 0)."""

    name: str
    fn: Callable
    eta: bool = False
    continuous: bool = False


A1111_TIMESTEP_SAMPLERS = {s.name: s for s in (TimestepSampler("DDIM", sample_ddim, eta=True),
                                               TimestepSampler("PLMS", sample_plms),
                                               TimestepSampler("UniPC", sample_unipc, continuous=True))}


_BY_KEY = {name.lower(): s for name, s in A1111_TIMESTEP_SAMPLERS.items()}


def find_timestep_sampler(name: str) -> TimestepSampler | None:
    """A1111's DDIM, PLMS or UniPC by name or alias ("ddim", "plms", "unipc"), or None."""
    return _BY_KEY.get(str(name).strip().lower())

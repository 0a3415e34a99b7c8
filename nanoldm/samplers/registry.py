"""The sampler registry: A1111's names -> a sampler function and the noise levels that make it reproduce the
diffusers scheduler of the same name, built from an SD 1.x scheduler config (``XScheduler.from_config`` of SD's
PNDM config: scaled_linear 0.00085..0.012, 1000 steps, steps_offset 1, set_alpha_to_one False).

    name             function                timesteps (diffusers' spacing)   ends on     space  quantize
    DDPM             sample_ddpm             leading, + steps_offset 1        0           VP     yes
    DDIM             sample_ddim (eta 0)     leading, + steps_offset 1        sigma(t=0)  VP     yes
    Euler            sample_euler            linspace (fractional)            0           sigma  no
    Euler a          sample_euler_ancestral  linspace (fractional)            0           sigma  no
    Heun             sample_heun             linspace (fractional)            0           sigma  no
    DPM++ 2M         sample_dpmpp_2m         round(linspace(steps + 1))[:-1]  0           VP     yes
    DPM++ 2M Karras  sample_dpmpp_2m         Karras, rho 7, table's range     0           VP     yes

Those are the defaults. A model folder's scheduler_config.json (``ScheduleConfig`` -> ``NoiseSchedule.placement``)
changes them as diffusers' ``from_config`` does: ``timestep_spacing`` replaces each sampler's spacing (the Euler
family then starts from sqrt(1 + sigma_max^2) noise under "leading"), ``steps_offset`` shifts "leading" steps, and
``use_karras_sigmas`` gives Euler and Heun Karras levels over their chosen range, DPM++ 2M over the whole table.

"VP" schedulers (``init_noise_sigma`` 1) run on x / sqrt(1 + sigma^2): they start from unit-variance noise and
return that scaled sample, so ``init_noise_sigma`` and ``sample`` convert at both ends.

img2img: with ``steps`` sigmas and strength s, ``img2img_sigmas`` keeps sigmas[steps - min(int(steps * s), steps):]
(diffusers' ``StableDiffusionImg2ImgPipeline.get_timesteps``); start from x0 + noise * kept[0].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from nanoldm.diffusion.schedule import NoiseSchedule, StepPlacement
from nanoldm.samplers.ddim import sample_ddim
from nanoldm.samplers.ddpm import sample_ddpm
from nanoldm.samplers.dpmpp import sample_dpmpp_2m
from nanoldm.samplers.euler import sample_euler, sample_euler_ancestral
from nanoldm.samplers.heun import sample_heun
from nanoldm.samplers.sigmas import karras_sigmas, sigmas_at_timesteps

SD_STEPS_OFFSET = 1  # SD 1.x's scheduler config: "leading" timesteps are shifted up by one


@dataclass(frozen=True)
class SamplerSpec:
    """A named sampler: its function, its noise levels, and how diffusers' scheduler of that name starts and ends.

    ``quantize``: diffusers feeds this scheduler's UNet integer timesteps (rounded ones for Karras sigmas, which
    are off the table); build the denoiser as ``Denoiser(..., quantize=spec.quantize)`` to reproduce it exactly.
    The Euler family gets fractional timesteps in diffusers, so it is False there.
    ``options``: the keyword options of ``fn`` that ``sample`` passes on; others are ignored, so a pipeline may
    pass its run-time knobs (DDIM's ``eta``) to any sampler.
    """

    name: str
    fn: Callable
    make_sigmas: Callable[[NoiseSchedule, int], torch.Tensor]
    vp: bool = False
    quantize: bool = False
    options: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """snake_case id: "Euler a" -> "euler_a", "DPM++ 2M Karras" -> "dpmpp_2m_karras"."""
        return self.name.lower().replace("++", "pp").replace(" ", "_")

    def sigmas(self, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
        """Shapes: -> (steps + 1,) float32, descending."""
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        return self.make_sigmas(schedule, int(steps))

    def init_noise_sigma(self, sigmas: torch.Tensor, placement: StepPlacement = StepPlacement()) -> torch.Tensor:
        """Scale of the txt2img starting noise: sigmas[0] (sigma space) or sqrt(1 + sigmas[0]^2) (unit noise in
        VP space, seen in sigma space; diffusers' Euler family also starts so under "leading" spacing)."""
        leading = placement.timestep_spacing == "leading" and self.make_sigmas in (_euler_sigmas, _euler_a_sigmas)
        return (1 + sigmas[0] ** 2).sqrt() if self.vp or leading else sigmas[0]

    def img2img_sigmas(self, sigmas: torch.Tensor, strength: float) -> torch.Tensor:
        """The last ``strength`` part of the schedule, as diffusers' img2img selects it (module docstring).
        Shapes: (steps + 1,) -> (k + 1,), k = min(int(steps * strength), steps)."""
        steps = len(sigmas) - 1
        return sigmas[steps - min(int(steps * strength), steps):]

    def sample(self, denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, cond, noise=None, callback=None,
               **options) -> torch.Tensor:
        """Run the sampler from x (sigma space, at sigmas[0]). Returns the sample at sigmas[-1], in the space
        diffusers' scheduler returns it (VP: x / sqrt(1 + sigmas[-1]^2); equal to x when sigmas[-1] = 0).
        Shapes: x (B, C, h, w), sigmas (k + 1,) -> (B, C, h, w)."""
        kwargs = {k: v for k, v in options.items() if k in self.options}
        x = self.fn(denoiser, x, sigmas, cond=cond, noise=noise, callback=callback, **kwargs)
        return x / (1 + sigmas[-1] ** 2).sqrt() if self.vp else x


# --- noise levels per sampler ---------------------------------------------------------------------------
# Each reads ``schedule.placement`` as diffusers' scheduler of that name reads its config (``from_config`` of a
# model folder's scheduler_config.json); the spacing defaults are those schedulers' own.

def _timesteps(schedule: NoiseSchedule, steps: int, default: str) -> torch.Tensor:
    placement = schedule.placement
    return schedule.timesteps(steps, placement.timestep_spacing or default, placement.steps_offset)


def _vp_timesteps(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """DDPM and DDIM: "leading" by default, integer timesteps (their "linspace" is rounded)."""
    return _timesteps(schedule, steps, "leading").round()


def _ddpm_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return sigmas_at_timesteps(schedule, _vp_timesteps(schedule, steps), 0.0)  # alpha_bar "before t = 0" is 1


def _ddim_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    # set_alpha_to_one=False: the last step ends at t=0
    return sigmas_at_timesteps(schedule, _vp_timesteps(schedule, steps), float(schedule.sigmas[0]))


def _euler_sigmas(schedule: NoiseSchedule, steps: int, karras_allowed: bool = True) -> torch.Tensor:
    """The Euler family: "linspace" by default, fractional timesteps; Karras levels span the chosen ones."""
    sigmas = sigmas_at_timesteps(schedule, _timesteps(schedule, steps, "linspace"))
    if karras_allowed and schedule.placement.use_karras_sigmas:
        return karras_sigmas(float(sigmas[-2]), float(sigmas[0]), steps)
    return sigmas


def _euler_a_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return _euler_sigmas(schedule, steps, karras_allowed=False)  # diffusers' Euler a has no Karras option


def _dpm_solver_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """DPM-Solver: steps + 1 integer timesteps less the last ("linspace" by default; "trailing" takes steps);
    Karras levels span the whole table."""
    if schedule.placement.use_karras_sigmas:
        return _karras_sigmas(schedule, steps)
    spacing = schedule.placement.timestep_spacing or "linspace"
    if spacing == "trailing":
        timesteps = schedule.timesteps(steps, spacing)
    else:
        timesteps = schedule.timesteps(steps + 1, spacing, schedule.placement.steps_offset).round()[:-1]
    return sigmas_at_timesteps(schedule, timesteps)


def _karras_sigmas(schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    return karras_sigmas(float(schedule.sigmas[0]), float(schedule.sigmas[-1]), steps)


SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("DDPM", sample_ddpm, _ddpm_sigmas, vp=True, quantize=True),
    SamplerSpec("DDIM", sample_ddim, _ddim_sigmas, vp=True, quantize=True, options=("eta",)),
    SamplerSpec("Euler", sample_euler, _euler_sigmas),
    SamplerSpec("Euler a", sample_euler_ancestral, _euler_a_sigmas),
    SamplerSpec("Heun", sample_heun, _euler_sigmas),
    SamplerSpec("DPM++ 2M", sample_dpmpp_2m, _dpm_solver_sigmas, vp=True, quantize=True),
    SamplerSpec("DPM++ 2M Karras", sample_dpmpp_2m, _karras_sigmas, vp=True, quantize=True),
)}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
_BY_KEY = {key: spec for spec in SAMPLERS.values() for key in (spec.name.lower(), spec.id)}


def get_sampler(name: str) -> SamplerSpec:
    """Look a sampler up by its A1111 name or snake_case id, case-insensitively."""
    spec = _BY_KEY.get(str(name).strip().lower())
    if spec is None:
        names = ", ".join(f"{s.name!r} ({s.id})" for s in SAMPLERS.values())
        raise ValueError(f"unknown sampler {name!r}; valid names: {names}")
    return spec


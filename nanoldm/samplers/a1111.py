"""A1111 1.10's samplers (``modules/sd_samplers_kdiffusion.py``, ``sd_samplers_extra.py``) and how a name and
a "Schedule type" become a sampler function and its noise levels (``sd_samplers.get_sampler_and_scheduler``).

    name               function                    Automatic schedule  notes (Uniform: the model's own sigmas)
    DPM++ 2M           sample_dpmpp_2m             Karras
    DPM++ SDE          sample_dpmpp_sde            Karras              Brownian noise
    DPM++ 2M SDE       sample_dpmpp_2m_sde         Exponential         Brownian noise
    DPM++ 2M SDE Heun  sample_dpmpp_2m_sde (heun)  Exponential         Brownian noise
    DPM++ 2S a         sample_dpmpp_2s_ancestral   Karras              ancestral noise
    DPM++ 3M SDE       sample_dpmpp_3m_sde         Exponential         Brownian noise, penultimate sigma dropped
    Euler a            sample_euler_ancestral      Uniform             ancestral noise
    Euler              sample_euler                Uniform
    LMS                sample_lms                  Uniform
    Heun               sample_heun                 Uniform
    DPM2               sample_dpm_2                Karras              penultimate sigma dropped
    DPM2 a             sample_dpm_2_ancestral      Karras              ancestral noise, penultimate sigma dropped
    DPM fast           sample_dpm_fast             Uniform             the model's sigma range, n = steps
    DPM adaptive       sample_dpm_adaptive         Uniform             the model's sigma range, adaptive steps
    Restart            sample_restart              Karras
    LCM                sample_lcm                  Uniform             ancestral noise; LCM's 50-step schedule

"Penultimate sigma dropped": the schedule is made for steps + 1 and its next-to-last level removed. Every
sampler with an ``eta`` runs with A1111's default eta of 1 ("Eta for ancestral samplers").
Legacy names carry their schedule: "DPM++ 2M Karras" is "DPM++ 2M" with "Karras" (any "<sampler> <Schedule>").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.dpm2 import sample_dpm_2, sample_dpm_2_ancestral
from nanoldm.samplers.dpm_solver import sample_dpm_adaptive, sample_dpm_fast
from nanoldm.samplers.dpmpp import sample_dpmpp_2m, sample_dpmpp_2s_ancestral
from nanoldm.samplers.dpmpp_sde import sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_dpmpp_sde
from nanoldm.samplers.euler import sample_euler, sample_euler_ancestral
from nanoldm.samplers.heun import sample_heun
from nanoldm.samplers.lcm import sample_lcm
from nanoldm.samplers.lms import sample_lms
from nanoldm.samplers.restart import sample_restart
from nanoldm.samplers.schedules import SCHEDULE_NAMES, schedule_key, schedule_sigmas, without_penultimate


@dataclass(frozen=True)
class A1111Sampler:
    """One entry of A1111's sampler list. ``options``: keyword arguments ``fn`` gets (eta, solver_type);
    ``brownian``: ``fn`` takes ``noise_sampler``, a Brownian tree seeded with the images' seeds;
    ``model_range``: the solver runs between the model's own sigma_max and sigma_min (txt2img)."""

    name: str
    fn: Callable
    scheduler: str | None = None  # the "Automatic" schedule; None: the model's own sigmas (= Uniform)
    discard_penultimate: bool = False
    brownian: bool = False
    model_range: bool = False
    lcm: bool = False  # sampled on lcm_schedule(schedule), through LCMBoundary (samplers/lcm.py)
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def sigmas(self, schedule: NoiseSchedule, steps: int, scheduler: str = "Automatic", *,
               discard: bool = False) -> torch.Tensor:
        """A1111's ``KDiffusionSampler.get_sigmas``; ``discard``: its "Always discard next-to-last sigma".
        Shapes: -> (steps + 1,) float32, descending to 0."""
        name = schedule_key(scheduler)
        name = (self.scheduler or "Uniform") if name == "Automatic" else name
        if self.discard_penultimate or discard:
            return without_penultimate(lambda s, n: schedule_sigmas(name, s, n), schedule, steps)
        return schedule_sigmas(name, schedule, steps)

    def schedule_label(self, scheduler: str = "Automatic") -> str:
        """What A1111 writes as "Schedule type": the schedule that ran, "Automatic" when that is the model's own
        sigmas (A1111 resolves Automatic to a label only for samplers with a schedule of their own)."""
        name = schedule_key(scheduler)
        return (self.scheduler or "Automatic") if name == "Automatic" else name


_ETA = {"eta": 1.0}
A1111_SAMPLERS: dict[str, A1111Sampler] = {s.name: s for s in (
    A1111Sampler("DPM++ 2M", sample_dpmpp_2m, "Karras", aliases=("k_dpmpp_2m",)),
    A1111Sampler("DPM++ SDE", sample_dpmpp_sde, "Karras", brownian=True, options=_ETA, aliases=("k_dpmpp_sde",)),
    A1111Sampler("DPM++ 2M SDE", sample_dpmpp_2m_sde, "Exponential", brownian=True, options=_ETA,
                 aliases=("k_dpmpp_2m_sde",)),
    A1111Sampler("DPM++ 2M SDE Heun", sample_dpmpp_2m_sde, "Exponential", brownian=True,
                 options={**_ETA, "solver_type": "heun"}, aliases=("k_dpmpp_2m_sde_heun",)),
    A1111Sampler("DPM++ 2S a", sample_dpmpp_2s_ancestral, "Karras", options=_ETA, aliases=("k_dpmpp_2s_a",)),
    A1111Sampler("DPM++ 3M SDE", sample_dpmpp_3m_sde, "Exponential", discard_penultimate=True, brownian=True,
                 options=_ETA, aliases=("k_dpmpp_3m_sde",)),
    A1111Sampler("Euler a", sample_euler_ancestral, options=_ETA, aliases=("k_euler_a", "k_euler_ancestral")),
    A1111Sampler("Euler", sample_euler, aliases=("k_euler",)),
    A1111Sampler("LMS", sample_lms, aliases=("k_lms",)),
    A1111Sampler("Heun", sample_heun, aliases=("k_heun",)),
    A1111Sampler("DPM2", sample_dpm_2, "Karras", discard_penultimate=True, aliases=("k_dpm_2",)),
    A1111Sampler("DPM2 a", sample_dpm_2_ancestral, "Karras", discard_penultimate=True, options=_ETA,
                 aliases=("k_dpm_2_a",)),
    A1111Sampler("DPM fast", sample_dpm_fast, model_range=True, options=_ETA, aliases=("k_dpm_fast",)),
    A1111Sampler("DPM adaptive", sample_dpm_adaptive, model_range=True, options=_ETA, aliases=("k_dpm_ad",)),
    A1111Sampler("Restart", sample_restart, "Karras", aliases=("restart",)),
    A1111Sampler("LCM", sample_lcm, lcm=True, aliases=("k_lcm",)),
)}
A1111_SAMPLER_NAMES: tuple[str, ...] = tuple(A1111_SAMPLERS)


def _key(name: str) -> str:
    """Case, spaces and "++" folded: "DPM++ 2M Karras", "dpmpp_2m_karras" -> "dpmpp_2m_karras"."""
    return str(name).strip().lower().replace("++", "pp").replace(" ", "_")


_BY_KEY = {_key(key): s for s in A1111_SAMPLERS.values() for key in (s.name, *s.aliases)}


def find_a1111_sampler(name: str, scheduler: str = "Automatic") -> tuple[A1111Sampler, str] | None:
    """(sampler, schedule type) for an A1111 name, its snake_case id ("dpmpp_2m"), a k_ alias or a legacy
    "<sampler> <Schedule type>" name
    ("DPM++ 2M Karras" -> DPM++ 2M, Karras: the name's schedule wins over an Automatic ``scheduler``);
    None for a name A1111's k-diffusion list does not have."""
    key = _key(name)
    scheduler = schedule_key(scheduler)
    if key in _BY_KEY:
        return _BY_KEY[key], scheduler
    for label in SCHEDULE_NAMES[1:]:
        suffix = "_" + _key(label)
        if key.endswith(suffix) and key[: -len(suffix)] in _BY_KEY:
            return _BY_KEY[key[: -len(suffix)]], label if scheduler == "Automatic" else scheduler
    return None

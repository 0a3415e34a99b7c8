"""Which tool's conventions a generation follows (``GenerateOptions.like``): how a sampler name, a schedule type
and the steps become noise levels, how the starting noise is scaled, which timesteps the UNet sees, which part
of the schedule img2img re-runs, and how images become 8-bit pixels.

    like        names                      timesteps          starting noise            img2img                 8-bit
    a1111       A1111 1.10's (a1111.py);   fractional (no     noise * sigmas[0]         setup_img2img_steps:    trunc
                the rest as diffusers      quantization)                                sigmas[steps - t_enc - 1:]
    diffusers   the registry's (today's    per sampler        noise * init_noise_sigma  get_timesteps:          round
                conventions)               (SamplerSpec)                                sigmas[steps - k:]
    comfyui     ComfyUI's KSampler names   integer (nearest   one batch draw * sqrt(1 +  set_steps: the last     trunc
                (samplers/comfyui.py)      in log sigma)      sigma^2) from sigma_max    steps of steps/denoise

A1111 runs its k-diffusion samplers as ``KDiffusionSampler.sample`` / ``sample_img2img`` do
(``modules/sd_samplers_kdiffusion.py``): ancestral noise continues each image's generator (``rng.ImageNoise``),
and the SDE samplers' Brownian trees are seeded with the images' seeds (``create_noise_sampler``).
A1111's DDIM, PLMS and UniPC are its own "CompVis" samplers (``samplers/a1111_timesteps.py``): integer timesteps
1 + k * (1000 // steps), unit VP noise to start, the loop ending at t = 1 and that latent decoded; img2img noises
to the timestep after the first one run; UniPC runs as many steps on its own continuous grid. A1111 ignores the
schedule type for them, and so does nanoldm. DDPM, which A1111 lacks, runs with the diffusers conventions in every
mode (as everything does under like="diffusers").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.options import GenerateOptions
from nanoldm.rng import ImageNoise
from nanoldm.samplers import get_sampler
from nanoldm.samplers.a1111 import A1111Sampler, find_a1111_sampler
from nanoldm.samplers.a1111_timesteps import TimestepSampler, a1111_timesteps, find_timestep_sampler, timestep_sigmas
from nanoldm.samplers.brownian import BrownianNoise
from nanoldm.samplers.comfyui import comfyui_img2img_sigmas, comfyui_sigmas, find_comfyui, sampler_options
from nanoldm.samplers.lcm import LCMBoundary, LCMTimesteps, lcm_schedule
from nanoldm.samplers.schedules import schedule_key, uniform
from nanoldm.samplers.unipc import VPTimestep, unipc_times, vp_discrete_sigmas

PIXEL_ROUNDING = {"a1111": "truncate", "diffusers": "round", "comfyui": "truncate"}  # each tool's 8-bit pixels


@dataclass
class SamplingPlan:
    """What ``sample_latents`` runs: ``run(denoiser, x, cond, callback)`` from x at ``start_sigma`` along
    ``sigmas``; ``quantize`` for the Denoiser; ``schedule_label`` for the infotext (None: not written)."""

    name: str
    sigmas: torch.Tensor
    start_sigma: torch.Tensor
    quantize: bool
    run: Callable
    schedule_label: str | None = None
    timestep: Callable | None = None  # the Denoiser's sigma -> timestep, when not the schedule's (LCM)


def a1111_img2img_steps(steps: int, strength: float, hires_steps: int | None = None) -> tuple[int, int]:
    """A1111's ``sd_samplers_common.setup_img2img_steps``: (schedule length, t_enc). The sampler runs
    t_enc + 1 steps on ``sigmas[steps - t_enc - 1:]``. With ``hires_steps`` (Hires. fix's own step count) the
    schedule is stretched so exactly that many steps run."""
    if hires_steps:
        return (int(hires_steps / min(strength, 0.999)) if strength > 0 else 0), hires_steps - 1
    return steps, int(min(strength, 0.999) * steps)


def resolve_a1111(sampler: str, scheduler: str = "Automatic") -> tuple[A1111Sampler, str] | None:
    """The A1111 sampler and schedule type of a name (legacy names carry their schedule), or None."""
    return find_a1111_sampler(sampler, scheduler)


def infotext_names(opts: GenerateOptions) -> tuple[str, str | None]:
    """(Sampler, Schedule type) as the infotext names them: A1111's sampler name and the schedule that ran
    ("DPM++ 2M Karras" -> "DPM++ 2M", "Karras"); the registry's name and no schedule type otherwise."""
    if opts.like == "comfyui":
        spec, scheduler = find_comfyui(opts.sampler, opts.scheduler)
        return spec.name, scheduler
    if opts.like == "a1111" and (compvis := find_timestep_sampler(opts.sampler)) is not None:
        return compvis.name, None  # A1111 writes no schedule type for them
    found = resolve_a1111(opts.sampler, opts.scheduler) if opts.like == "a1111" else None
    if found is None:
        return get_sampler(opts.sampler).name, None
    return found[0].name, found[0].schedule_label(found[1])


def discard_params(opts: GenerateOptions) -> dict:
    """"Discard penultimate sigma: True" when the setting is on and the sampler does not drop that level anyway
    (A1111 writes it where its ``get_sigmas`` / ``get_timesteps`` applies the setting)."""
    if not opts.discard_penultimate_sigma or opts.like != "a1111":
        return {}
    found = None if find_timestep_sampler(opts.sampler) else resolve_a1111(opts.sampler, opts.scheduler)
    return {} if found is not None and found[0].discard_penultimate else {"Discard penultimate sigma": True}


def eta_params(opts: GenerateOptions) -> dict:
    """The infotext's eta, when not 0: "Eta DDIM" for A1111's own DDIM (its ``eta_infotext_field``; PLMS and
    UniPC take none), "Eta" otherwise."""
    compvis = find_timestep_sampler(opts.sampler) if opts.like == "a1111" else None
    if not opts.eta or (compvis is not None and not compvis.eta):
        return {}
    return {"Eta DDIM" if compvis else "Eta": opts.eta}


def plan(schedule: NoiseSchedule, opts: GenerateOptions, noise: ImageNoise, *, img2img: bool = False,
         hires_steps: int | None = None) -> SamplingPlan:
    """The sampling plan of ``opts`` for txt2img or img2img (``opts.strength``). ``hires_steps``: Hires. fix's
    second pass (A1111's ``setup_img2img_steps`` with its steps)."""
    if opts.like == "comfyui":
        return _comfyui_plan(schedule, opts, noise, img2img)
    if opts.like == "a1111" and (compvis := find_timestep_sampler(opts.sampler)) is not None:
        schedule_key(opts.scheduler)  # checked, then ignored, as A1111 ignores it for these samplers
        return _a1111_timesteps_plan(schedule, opts, compvis, noise, img2img, hires_steps)
    found = resolve_a1111(opts.sampler, opts.scheduler) if opts.like == "a1111" else None
    if found is None:
        schedule_key(opts.scheduler)  # an unknown schedule type is an error in every mode
        return _diffusers_plan(schedule, opts, noise, img2img)
    spec, scheduler = found
    timestep = None
    if spec.lcm:  # A1111's LCMCompVisDenoiser: LCM's 50 steps stand in for the model's schedule
        schedule, num_train = lcm_schedule(schedule), schedule.num_train_timesteps
        timestep = LCMTimesteps(schedule, num_train)
    discard = opts.discard_penultimate_sigma
    if not img2img:
        sigmas = spec.sigmas(schedule, opts.steps, scheduler, discard=discard)
        run_sigmas = uniform(schedule, opts.steps) if spec.model_range else sigmas
    else:
        steps, t_enc = a1111_img2img_steps(opts.steps, opts.strength, hires_steps)
        sigmas = spec.sigmas(schedule, steps, scheduler, discard=discard)
        # strength 0 re-runs nothing (A1111 would still run its last step; nanoldm keeps the image as it is)
        run_sigmas = sigmas[steps - t_enc - 1:] if opts.strength > 0 else sigmas[-1:]
    options = dict(spec.options)
    if spec.brownian:  # one tree per image over the whole schedule's range
        options["noise_sampler"] = BrownianNoise(noise.batch_shape, sigmas[sigmas > 0].min(),
                                                 sigmas.max(), noise.seeds, device=noise.device, dtype=noise.dtype)

    def run(denoiser, x, cond, callback):
        denoiser = LCMBoundary(denoiser, timestep) if spec.lcm else denoiser
        return spec.fn(denoiser, x, run_sigmas.to(x.device), cond=cond, noise=noise, callback=callback, **options)

    start = run_sigmas[0] if img2img else sigmas[0]
    return SamplingPlan(spec.name, run_sigmas, start, False, run, spec.schedule_label(scheduler), timestep)


def _a1111_timesteps_plan(schedule: NoiseSchedule, opts: GenerateOptions, spec: TimestepSampler, noise: ImageNoise,
                          img2img: bool, hires_steps: int | None) -> SamplingPlan:
    """A1111's ``CompVisSampler.sample`` / ``sample_img2img`` in sigma space: x enters as the VP latent divided by
    sqrt(abar) of the first level run, and leaves times sqrt(abar) of the last (t = 1; UniPC's t = 1 / N)."""
    T, noised_to, more = schedule.num_train_timesteps, None, int(opts.discard_penultimate_sigma)
    if img2img:  # "discard penultimate sigma" only adds a timestep here (A1111's get_timesteps)
        steps, t_enc = a1111_img2img_steps(opts.steps, opts.strength, hires_steps)
        timesteps = a1111_timesteps(steps + more, T)
        noised_to = schedule.sigmas[timesteps[t_enc]].float()  # the image is noised one timestep above the run
        timesteps = timesteps[:t_enc]
    else:
        timesteps = a1111_timesteps(opts.steps + more, T)
    timestep, options = None, ({"eta": opts.eta} if spec.eta else {})
    if spec.continuous and len(timesteps):  # UniPC: as many steps on its own grid, fractional UNet timesteps
        t_start = (float(timesteps[-1]) + 1) / T if img2img else None
        sigmas = vp_discrete_sigmas(schedule.alphas_cumprod, unipc_times(len(timesteps), T, t_start)).float()
        timestep = VPTimestep(schedule.alphas_cumprod)
        options["order"] = min(3, len(timesteps))  # A1111 fails with fewer steps than the order; nanoldm lowers it
    else:
        sigmas = timestep_sigmas(schedule, timesteps).float()
    start = noised_to if img2img else (1 + sigmas[0] ** 2).sqrt()  # unit VP noise in sigma space

    def run(denoiser, x, cond, callback):
        if img2img:  # sqrt(abar) of the noised level, then 1 / sqrt(abar) of the first level run
            x = x * ((1 + sigmas[0] ** 2) / (1 + noised_to ** 2)).sqrt()
        x = spec.fn(denoiser, x, sigmas.to(x.device), cond=cond, noise=noise, callback=callback, **options)
        return x / (1 + sigmas[-1] ** 2).sqrt()  # back to the VP latent at the last level, which A1111 decodes

    return SamplingPlan(spec.name, sigmas, start, not spec.continuous, run, timestep=timestep)


def _diffusers_plan(schedule: NoiseSchedule, opts: GenerateOptions, noise: ImageNoise, img2img: bool) -> SamplingPlan:
    spec = get_sampler(opts.sampler)
    sigmas = spec.sigmas(schedule, opts.steps)
    if img2img:
        sigmas = spec.img2img_sigmas(sigmas, opts.strength)
        start = sigmas[0] if len(sigmas) else torch.tensor(0.0)
    else:
        start = spec.init_noise_sigma(sigmas, schedule.placement)

    def run(denoiser, x, cond, callback):
        return spec.sample(denoiser, x, sigmas.to(x.device), cond=cond, noise=noise, callback=callback, eta=opts.eta)

    return SamplingPlan(spec.name, sigmas, start, spec.quantize, run)


def _comfyui_plan(schedule: NoiseSchedule, opts: GenerateOptions, noise, img2img: bool) -> SamplingPlan:
    """ComfyUI's KSampler (``comfy/samplers.py``): its schedulers, integer timesteps (the nearest in log sigma),
    the starting noise times sqrt(1 + sigma^2) when the schedule starts at sigma_max (else times sigma), the
    samplers' own defaults (eta 1, s_noise 1), one Brownian tree for the batch, img2img as ``set_steps``."""
    spec, scheduler = find_comfyui(opts.sampler, opts.scheduler)
    if img2img:
        sigmas = comfyui_img2img_sigmas(spec, scheduler, schedule, opts.steps, opts.strength)
    else:
        sigmas = comfyui_sigmas(spec, scheduler, schedule, opts.steps)
    sigma_max = float(schedule.sigmas.float()[-1])
    first = float(sigmas[0])
    start = ((1 + sigmas[0] ** 2).sqrt() if math.isclose(sigma_max, first, rel_tol=1e-5) or first > sigma_max
             else sigmas[0])
    options = sampler_options(spec, schedule)
    if spec.brownian and len(sigmas) > 1:
        options["noise_sampler"] = BrownianNoise(noise.batch_shape, sigmas[sigmas > 0].min(), sigmas.max(),
                                                 noise.seeds, device=noise.device, dtype=noise.dtype)

    def run(denoiser, x, cond, callback):
        return spec.fn(denoiser, x, sigmas.to(x.device), cond=cond, noise=noise, callback=callback, **options)

    return SamplingPlan(spec.name, sigmas, start, True, run, scheduler)

"""Run-time knobs shared by the command line and the Python API (architecture lives in ``config.py``).

``GenerateOptions`` holds the ONE set of generation defaults: ``Pipeline`` methods, ``nanoldm eval`` and the
command line (``cli/sampling_args.py`` reads its defaults from here) all start from it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nanoldm.samplers import SAMPLER_NAMES, get_sampler
from nanoldm.samplers.a1111 import A1111_SAMPLER_NAMES, find_a1111_sampler
from nanoldm.samplers.a1111_timesteps import A1111_TIMESTEP_SAMPLERS, find_timestep_sampler
from nanoldm.samplers.comfyui import find_comfyui
from nanoldm.samplers.schedules import schedule_key

DEFAULT_SAMPLER = "Euler a"
IMG2IMG_STRENGTH = 0.75  # img2img re-runs the last 3/4 of the schedule by default (A1111's and diffusers' choice)
LIKES = ("a1111", "diffusers", "comfyui")  # whose conventions a generation follows (pipelines/conventions.py)
INPAINTING_FILLS = ("fill", "original", "latent noise", "latent nothing")  # A1111's "Masked content", by number
INPAINT_STRENGTH = 1.0  # inpainting regenerates the masked region from pure noise by default (A1111's choice)
# how img2img / inpainting fit the input image to the target size: A1111's resize modes 0, 1 and 2
RESIZE_MODES = ("just resize", "crop and resize", "resize and fill")


@dataclass(frozen=True)
class GenerateOptions:
    """What a user chooses for one generation call. ``validate`` names every impossible setting."""

    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = 20
    cfg_scale: float | None = None  # None: the model's own (ModelConfig.default_cfg_scale: its cfg_scale, else 7)
    seed: int | None = None  # None or -1: random
    width: int | None = None  # None: the model's native size
    height: int | None = None
    batch_size: int = 1
    clip_skip: int = 1
    strength: float = IMG2IMG_STRENGTH  # img2img / inpaint: how much of the schedule is re-run
    eta: float = 0.0  # DDIM's stochasticity
    resize_mode: str = RESIZE_MODES[0]  # img2img / inpaint: how the input image becomes width x height
    inpainting_fill: int = 1  # inpaint: A1111's "Masked content": 0 fill, 1 original, 2 latent noise, 3 nothing
    inpaint_full_res: bool = False  # inpaint: A1111's "Inpaint area: Only masked" (a crop around the mask)
    inpaint_full_res_padding: int = 0  # its "Only masked padding, pixels"
    force_size: bool = False  # allow sizes over 4x the model's native size (slow, and it draws noise there)
    # A1111's seed extras (its API's names; rng.py): a variation seed, and the size a seed's noise is drawn at
    subseed: int | None = None  # None or -1: random; used only when subseed_strength > 0
    subseed_strength: float = 0.0  # 0: the seed's noise, 1: the variation seed's
    seed_resize_from_h: int = 0  # 0: off (both must be > 0)
    seed_resize_from_w: int = 0
    ensd: int = 0  # A1111's "Eta noise seed delta": the samplers' later noise is seeded seed + ensd
    # A1111's Hires. fix (txt2img only; pipelines/hires.py): a second img2img pass at a larger size, re-running
    # the last ``strength`` part of the schedule (A1111's "Denoising strength")
    enable_hr: bool = False
    hr_scale: float = 2.0  # used when hr_resize_x and hr_resize_y are both 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str | None = None  # None: "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    hr_sampler_name: str | None = None  # None: the first pass's sampler
    hr_scheduler: str | None = None  # None: the first pass's schedule type (Automatic: the hires sampler's own)
    hr_prompt: str = ""  # "": the prompt
    hr_negative_prompt: str = ""
    scheduler: str = "Automatic"  # A1111's "Schedule type"; Automatic: the sampler's own
    # A1111's setting "Always discard next-to-last sigma" (always_discard_next_to_last_sigma): its k-diffusion
    # samplers drop the next-to-last noise level of a one-step-longer schedule, its DDIM/PLMS/UniPC take one more
    # timestep (A1111's own, odd, behaviour)
    discard_penultimate_sigma: bool = False
    like: str = "a1111"  # whose conventions: "a1111" (1.10), "diffusers" or "comfyui" (pipelines/conventions.py)

    def validate(self, latent_factor: int) -> None:
        """ValueError naming the first impossible setting; sizes must be multiples of ``latent_factor``."""
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative prompt must be strings")
        check_sampler(self.sampler, self.scheduler, self.like)  # an unknown name lists the valid ones
        for name in ("cfg_scale", "strength", "eta", "subseed_strength", "hr_scale"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name.replace('_', ' ')} must be a finite number, got {getattr(self, name)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if self.clip_skip < 1:
            raise ValueError(f"clip skip must be at least 1, got {self.clip_skip}")
        if self.eta < 0:
            raise ValueError(f"eta must be at least 0, got {self.eta}")
        if self.inpainting_fill not in range(len(INPAINTING_FILLS)):
            raise ValueError(f"inpainting fill must be 0..3 ({', '.join(INPAINTING_FILLS)}), "
                             f"got {self.inpainting_fill}")
        if self.inpaint_full_res_padding < 0:
            raise ValueError(f"inpaint_full_res_padding must be at least 0, got {self.inpaint_full_res_padding}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize_mode!r}; valid: {', '.join(RESIZE_MODES)}")
        if not 0.0 <= self.subseed_strength <= 1.0:
            raise ValueError(f"subseed strength (variation strength) must be in [0, 1], got {self.subseed_strength}")
        if self.like == "comfyui" and (self.subseed_strength or self.ensd or self.enable_hr
                                       or self.seed_resize_from_w > 0 or self.seed_resize_from_h > 0):
            raise ValueError("variation seeds, seed resize, ENSD and Hires. fix are A1111's: not with "
                             "like='comfyui' (--like comfyui)")
        if self.discard_penultimate_sigma and self.like != "a1111":
            raise ValueError(f"discard penultimate sigma is an A1111 setting: not with like={self.like!r}")
        for name in ("seed_resize_from_w", "seed_resize_from_h"):
            size = getattr(self, name)
            if 0 < size < latent_factor:
                raise ValueError(f"{name} {size} is smaller than the latent factor {latent_factor} (0: off)")
        for name in ("width", "height"):
            size = getattr(self, name)
            if size is not None and (size < latent_factor or size % latent_factor):
                raise ValueError(f"{name} {size} is not a positive multiple of the latent factor {latent_factor}")


def check_sampler(sampler: str, scheduler: str = "Automatic", like: str = "a1111") -> None:
    """ValueError naming the valid values for an unknown conventions, schedule type or sampler name."""
    if like not in LIKES:
        raise ValueError(f"unknown conventions {like!r}; valid: {', '.join(LIKES)}")
    if like == "comfyui":
        find_comfyui(sampler, scheduler)
        return
    schedule_key(scheduler)
    if like == "a1111" and (find_a1111_sampler(sampler, scheduler) or find_timestep_sampler(sampler)) is not None:
        return
    try:
        get_sampler(sampler)
    except ValueError:
        names = dict.fromkeys((*A1111_SAMPLER_NAMES, *A1111_TIMESTEP_SAMPLERS, *SAMPLER_NAMES) if like == "a1111"
                              else SAMPLER_NAMES)
        raise ValueError(f"unknown sampler {sampler!r}; valid names: {', '.join(map(repr, names))} (A1111's legacy "
                         f"'<sampler> <schedule type>' names too, e.g. 'DPM++ 2M Karras')") from None


def as_options(options: GenerateOptions | None = None, **fields) -> GenerateOptions:
    """``options`` (default: ``GenerateOptions()``) with ``fields`` replaced: how functions that take either a
    ready ``GenerateOptions`` or its fields as keywords build theirs. An unknown field is a TypeError."""
    return dataclasses.replace(options if options is not None else GenerateOptions(), **fields)


def batch_run(opts: GenerateOptions, run: int) -> GenerateOptions:
    """Batch ``run`` (0, 1, ...) of A1111's "Batch count" (``n_iter``): the seeds continue after the previous
    batch's (with a variation seed, the variation seeds do, as in A1111). ``opts``' seeds must be resolved (a
    random seed is drawn once for all batches)."""
    step = run * opts.batch_size
    if opts.subseed_strength:
        return dataclasses.replace(opts, subseed=opts.subseed + step)
    return dataclasses.replace(opts, seed=opts.seed + step)

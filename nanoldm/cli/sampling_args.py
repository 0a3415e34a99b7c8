"""The sampling flags of every generating command (txt2img, img2img, inpaint, sample, eval, demo), declared once,
with :class:`~nanoldm.options.GenerateOptions`' defaults, and :func:`generate_options`, the one place the command
line turns them into a ``GenerateOptions``.

A command that needs another default says so where it calls :func:`add_sampling_arguments` (``seed=0`` for
the reproducible reports of ``eval`` and ``demo``; class / layout ``sample`` uses ``CONDITION_DEFAULTS``).
"""
from __future__ import annotations

import argparse
import dataclasses

from nanoldm.options import INPAINTING_FILLS, LIKES, RESIZE_MODES, GenerateOptions

DEFAULTS = GenerateOptions()
_DECLARED = "sampling_fields"  # the GenerateOptions fields a parser declared, for generate_options


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed: int | None = DEFAULTS.seed,
                           batch_size: int | None = DEFAULTS.batch_size,
                           strength: float | None = None, image: bool = False, hires: bool = False,
                           mask: bool = False) -> None:
    """--sampler, --scheduler, --like, --steps, --cfg-scale, --seed; --batch-size unless ``batch_size`` is None (a command whose
    --batch-size means something else); --strength when ``strength`` is given (img2img, inpaint); with ``image``
    the rest of a prompt-to-image call: --negative-prompt, --width, --height, --clip-skip, --eta, and A1111's seed
    extras (--subseed, --subseed-strength, --seed-resize-from-w/-h, --ensd); with ``hires`` (txt2img) A1111's
    Hires. fix (--hires, --hires-scale, ..., --denoising-strength)."""
    g = p.add_argument_group("sampling")
    fields = ["sampler", "scheduler", "discard_penultimate_sigma", "like", "steps", "cfg_scale", "seed"]
    g.add_argument("--sampler", default=DEFAULTS.sampler,
                   help='e.g. "Euler a", "DPM++ 2M Karras", ddim, euler (default: %(default)s)')
    g.add_argument("--scheduler", default=DEFAULTS.scheduler,
                   help='A1111 "Schedule type": Automatic (the sampler\'s own), Uniform, Karras, Exponential, '
                        'Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM, Beta '
                        '(default: %(default)s)')
    g.add_argument("--discard-penultimate-sigma", action="store_true",
                   help="A1111's setting 'Always discard next-to-last sigma' (like=a1111 only)")
    g.add_argument("--like", default=DEFAULTS.like, choices=LIKES,
                   help="whose conventions: a1111 (1.10) or diffusers (default: %(default)s)")
    g.add_argument("--steps", type=int, default=DEFAULTS.steps, help="sampling steps (default: %(default)s)")
    g.add_argument("--cfg-scale", type=float, default=DEFAULTS.cfg_scale,
                   help="classifier-free guidance scale (default: the model's own, which the built-in model sets "
                        "to 4; 7, A1111's, for models that set none)")
    shown = "random" if seed is None else "%(default)s"
    g.add_argument("--seed", type=int, default=seed, help=f"image i uses seed + i; -1: random (default: {shown})")
    if batch_size is not None:
        g.add_argument("--batch-size", type=int, default=batch_size, help="images per call (default: %(default)s)")
        fields.append("batch_size")
    if strength is not None:
        g.add_argument("--strength", type=float, default=strength,
                       help="how much of the schedule is re-run, in [0, 1] (default: %(default)s)")
        g.add_argument("--resize-mode", default=DEFAULTS.resize_mode, choices=RESIZE_MODES,
                       help="how the input image is fitted to --width x --height (A1111's modes; default: %(default)s)")
        fields += ["strength", "resize_mode"]
    if image:
        g.add_argument("--negative-prompt", default=DEFAULTS.negative_prompt, help="default: none")
        g.add_argument("--width", type=int, default=DEFAULTS.width, help="default: the model's native size")
        g.add_argument("--height", type=int, default=DEFAULTS.height, help="default: the model's native size")
        g.add_argument("--force-size", action="store_true",
                       help="allow a size over 4x the model's native size (slow; the model draws noise there)")
        g.add_argument("--clip-skip", type=int, default=DEFAULTS.clip_skip, help="default: %(default)s")
        g.add_argument("--eta", type=float, default=DEFAULTS.eta, help="DDIM eta (default: %(default)s)")
        fields += ["negative_prompt", "width", "height", "force_size", "clip_skip", "eta"]
        fields += _add_seed_extras(p)
    if hires:
        fields += _add_hires(p)
    if mask:
        g.add_argument("--masked-content", dest="inpainting_fill", type=_masked_content, default=1,
                       metavar="MODE", help="what the masked region starts from, A1111's 'Masked content': fill, "
                                            "original (default), 'latent noise' or 'latent nothing'")
        g.add_argument("--only-masked", dest="inpaint_full_res", action="store_true",
                       help="A1111's 'Inpaint area: Only masked': inpaint a crop around the mask at --width x "
                            "--height and paste it back (the picture keeps its size)")
        g.add_argument("--only-masked-padding", dest="inpaint_full_res_padding", type=int, default=0, metavar="PX",
                       help="pixels added around the mask's box for --only-masked (default: %(default)s)")
        fields += ["inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding"]
    p.set_defaults(**{_DECLARED: tuple(fields)})


def _masked_content(text: str) -> int:
    if text in INPAINTING_FILLS:
        return INPAINTING_FILLS.index(text)
    raise argparse.ArgumentTypeError(f"unknown masked content {text!r}; valid: {', '.join(INPAINTING_FILLS)}")


def _add_seed_extras(p: argparse.ArgumentParser) -> list[str]:
    """A1111's variation seed, resize seed from and eta noise seed delta (``nanoldm.rng``)."""
    g = p.add_argument_group("variation seed (A1111's seed extras)")
    g.add_argument("--subseed", type=int, default=DEFAULTS.subseed,
                   help="variation seed; image i uses subseed + i; -1: random (default: random)")
    g.add_argument("--subseed-strength", type=float, default=DEFAULTS.subseed_strength,
                   help="variation strength in [0, 1]: 0 the seed's noise, 1 the variation seed's (default: %(default)s)")
    g.add_argument("--seed-resize-from-w", type=int, default=DEFAULTS.seed_resize_from_w, metavar="W",
                   help="draw the seed's noise as for an image this wide (with -h; default: off)")
    g.add_argument("--seed-resize-from-h", type=int, default=DEFAULTS.seed_resize_from_h, metavar="H",
                   help="draw the seed's noise as for an image this high (with -w; default: off)")
    g.add_argument("--ensd", type=int, default=DEFAULTS.ensd,
                   help="eta noise seed delta: the samplers' later noise is seeded seed + ENSD (default: %(default)s)")
    return ["subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "ensd"]


def _add_hires(p: argparse.ArgumentParser) -> list[str]:
    """A1111's Hires. fix (``nanoldm.pipelines.hires``), its API field names as destinations."""
    g = p.add_argument_group("Hires. fix (A1111's second pass at a larger size)")
    g.add_argument("--hires", dest="enable_hr", action="store_true", help="turn Hires. fix on")
    g.add_argument("--hires-scale", dest="hr_scale", type=float, default=DEFAULTS.hr_scale,
                   help="upscale by this factor (default: %(default)s)")
    g.add_argument("--hires-resize-x", dest="hr_resize_x", type=int, default=DEFAULTS.hr_resize_x, metavar="W",
                   help="resize width instead of a factor (0: from the height; default: %(default)s)")
    g.add_argument("--hires-resize-y", dest="hr_resize_y", type=int, default=DEFAULTS.hr_resize_y, metavar="H",
                   help="resize height instead of a factor (0: from the width; default: %(default)s)")
    g.add_argument("--hires-upscaler", dest="hr_upscaler", default=DEFAULTS.hr_upscaler,
                   help='"Latent" (default), "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic '
                        'antialiased)", "Latent (nearest)", "Latent (nearest-exact)", "Lanczos" or "Nearest"')
    g.add_argument("--hires-steps", dest="hr_second_pass_steps", type=int, default=DEFAULTS.hr_second_pass_steps,
                   help="second-pass steps (0: the same as --steps; default: %(default)s)")
    g.add_argument("--hires-sampler", dest="hr_sampler_name", default=DEFAULTS.hr_sampler_name,
                   help="second-pass sampler (default: the same as --sampler)")
    g.add_argument("--hires-scheduler", dest="hr_scheduler", default=DEFAULTS.hr_scheduler,
                   help="second-pass schedule type (default: the same as --scheduler)")
    g.add_argument("--hires-prompt", dest="hr_prompt", default=DEFAULTS.hr_prompt,
                   help="second-pass prompt (default: the prompt)")
    g.add_argument("--hires-negative-prompt", dest="hr_negative_prompt", default=DEFAULTS.hr_negative_prompt,
                   help="second-pass negative prompt (default: the negative prompt)")
    g.add_argument("--denoising-strength", dest="strength", type=float, default=DEFAULTS.strength,
                   help="how much of the second pass's schedule is re-run, in [0, 1] (default: %(default)s)")
    return ["enable_hr", "hr_scale", "hr_resize_x", "hr_resize_y", "hr_upscaler", "hr_second_pass_steps",
            "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt", "strength"]


def generate_options(args: argparse.Namespace, **fields) -> GenerateOptions:
    """The ``GenerateOptions`` of the flags :func:`add_sampling_arguments` declared, plus ``fields`` (the prompt);
    fields it did not declare keep GenerateOptions' defaults."""
    declared = {name: getattr(args, name) for name in getattr(args, _DECLARED)}
    return dataclasses.replace(DEFAULTS, **declared, **fields)

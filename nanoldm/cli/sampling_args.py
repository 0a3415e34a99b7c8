"""The sampling flags of every generating command (txt2img, img2img, inpaint, sample, eval, demo), declared once,
with :class:`~nanoldm.options.GenerateOptions`' defaults, and :func:`generate_options`, the one place the command
line turns them into a ``GenerateOptions``.

A command that needs another default says so where it calls :func:`add_sampling_arguments` (``seed=0`` for
the reproducible reports of ``eval`` and ``demo``; class / layout ``sample`` uses ``CONDITION_DEFAULTS``).
"""
from __future__ import annotations

import argparse
import dataclasses

from nanoldm.options import LIKES, GenerateOptions

DEFAULTS = GenerateOptions()
_DECLARED = "sampling_fields"  # the GenerateOptions fields a parser declared, for generate_options


def add_sampling_arguments(p: argparse.ArgumentParser, *, seed: int | None = DEFAULTS.seed,
                           cfg_scale: float = DEFAULTS.cfg_scale, batch_size: int | None = DEFAULTS.batch_size,
                           strength: float | None = None, image: bool = False) -> None:
    """--sampler, --scheduler, --like, --steps, --cfg-scale, --seed; --batch-size unless ``batch_size`` is None (a command whose
    --batch-size means something else); --strength when ``strength`` is given (img2img, inpaint); with ``image``
    the rest of a prompt-to-image call: --negative-prompt, --width, --height, --clip-skip, --eta."""
    g = p.add_argument_group("sampling")
    fields = ["sampler", "scheduler", "like", "steps", "cfg_scale", "seed"]
    g.add_argument("--sampler", default=DEFAULTS.sampler,
                   help='e.g. "Euler a", "DPM++ 2M Karras", ddim, euler (default: %(default)s)')
    g.add_argument("--scheduler", default=DEFAULTS.scheduler,
                   help='A1111 "Schedule type": Automatic (the sampler\'s own), Uniform, Karras, Exponential, '
                        'Polyexponential, SGM Uniform, KL Optimal, Align Your Steps, Simple, Normal, DDIM, Beta '
                        '(default: %(default)s)')
    g.add_argument("--like", default=DEFAULTS.like, choices=LIKES,
                   help="whose conventions: a1111 (1.10) or diffusers (default: %(default)s)")
    g.add_argument("--steps", type=int, default=DEFAULTS.steps, help="sampling steps (default: %(default)s)")
    g.add_argument("--cfg-scale", type=float, default=cfg_scale,
                   help="classifier-free guidance scale (default: %(default)s)")
    shown = "random" if seed is None else "%(default)s"
    g.add_argument("--seed", type=int, default=seed, help=f"image i uses seed + i; -1: random (default: {shown})")
    if batch_size is not None:
        g.add_argument("--batch-size", type=int, default=batch_size, help="images per call (default: %(default)s)")
        fields.append("batch_size")
    if strength is not None:
        g.add_argument("--strength", type=float, default=strength,
                       help="how much of the schedule is re-run, in [0, 1] (default: %(default)s)")
        fields.append("strength")
    if image:
        g.add_argument("--negative-prompt", default=DEFAULTS.negative_prompt, help="default: none")
        g.add_argument("--width", type=int, default=DEFAULTS.width, help="default: the model's native size")
        g.add_argument("--height", type=int, default=DEFAULTS.height, help="default: the model's native size")
        g.add_argument("--clip-skip", type=int, default=DEFAULTS.clip_skip, help="default: %(default)s")
        g.add_argument("--eta", type=float, default=DEFAULTS.eta, help="DDIM eta (default: %(default)s)")
        fields += ["negative_prompt", "width", "height", "clip_skip", "eta"]
    p.set_defaults(**{_DECLARED: tuple(fields)})


def generate_options(args: argparse.Namespace, **fields) -> GenerateOptions:
    """The ``GenerateOptions`` of the flags :func:`add_sampling_arguments` declared, plus ``fields`` (the prompt);
    fields it did not declare keep GenerateOptions' defaults."""
    declared = {name: getattr(args, name) for name in getattr(args, _DECLARED)}
    return dataclasses.replace(DEFAULTS, **declared, **fields)

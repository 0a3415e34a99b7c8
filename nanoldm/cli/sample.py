"""``nanoldm sample``: images from a class- or layout-conditioned model (``nanoldm train ldm --condition
class|layout`` writes OUT/model.safetensors and OUT/condition.safetensors), written as PNGs with infotext.

    nanoldm sample --model runs/cls/model.safetensors --condition runs/cls/condition.safetensors --class "red circle"
    nanoldm sample --model runs/lay/model.safetensors --condition runs/lay/condition.safetensors \\
        --layout "red circle 0.1 0.1 0.4 0.4; blue square 0.55 0.5 0.9 0.85"
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nanoldm.checkpoint.parts import load_condition
from nanoldm.cli.generate import add_dtype_argument, save_images
from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.pipelines.conditioned import CONDITION_DEFAULTS, sample_condition
from nanoldm.pipelines.pipeline import load_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate from a class- or layout-conditioned model",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model (its UNet and VAE)")
    p.add_argument("--condition", required=True, help="the condition.safetensors trained with it")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="label", help="'colour shape', e.g. 'red circle'")
    what.add_argument("--layout", help="'colour shape x0 y0 x1 y1; ...' with boxes in [0, 1], y down")
    # a condition's reproducible seed (CONDITION_DEFAULTS); four images, to see its spread
    add_sampling_arguments(p, seed=CONDITION_DEFAULTS["seed"], batch_size=4)
    p.add_argument("--device", default=None)
    add_dtype_argument(p)
    p.add_argument("--out", default="outputs/sample", help="output folder (default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    condition = load_condition(args.condition)
    kind = type(condition).__name__
    if (args.label is not None) != (kind == "ClassEmbedding"):
        raise ValueError(f"{args.condition} is a {'class' if kind == 'ClassEmbedding' else 'layout'} condition: "
                         f"use {'--class' if kind == 'ClassEmbedding' else '--layout'}")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    text = args.label if args.label is not None else args.layout
    images = sample_condition(pipe, condition, text, generate_options(args))
    save_images(images, Path(args.out))
    return 0

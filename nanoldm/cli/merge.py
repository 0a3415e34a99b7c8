"""``nanoldm merge A [B] --out C [--alpha 0.3] [--method add-difference --base M] [--lora FILE:w ...]``: A1111's
Checkpoint Merger, streamed tensor by tensor (:mod:`nanoldm.checkpoint.merge`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from nanoldm.checkpoint.merge import FORMATS, METHODS, MergeRecipe, merge_checkpoints


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge checkpoints (weighted sum, add difference) and bake LoRAs into one")
    p.add_argument("a", metavar="A", help="the primary model: our .safetensors, an SD 1.x file or a diffusers folder")
    p.add_argument("b", metavar="B", nargs="?", default=None, help="the secondary model (absent: only --lora)")
    p.add_argument("--out", required=True, help="output file (nanoldm, sd) or folder (diffusers)")
    p.add_argument("--method", choices=METHODS, default="weighted-sum",
                   help="weighted-sum: A*(1-alpha) + B*alpha; add-difference: A + (B - base)*alpha "
                        "(default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="the multiplier (default: %(default)s)")
    p.add_argument("--base", default=None, metavar="M", help="the model B was finetuned from (add-difference)")
    p.add_argument("--lora", action="append", default=[], metavar="FILE:w",
                   help="bake a LoRA in at weight w (default 1); repeatable")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: diffusers when --out has no suffix, else A's layout)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(run=run)


def parse_lora(text: str) -> tuple[Path, float]:
    """``FILE:w`` (w optional, default 1) -> (path, weight); a bad weight is a one-line error."""
    path, sep, weight = text.rpartition(":")
    if not sep or "/" in weight or "\\" in weight or weight.endswith(".safetensors"):
        return Path(text), 1.0
    try:
        return Path(path), float(weight)
    except ValueError:
        raise ValueError(f"--lora {text}: weight {weight!r} is not a number") from None


def run(args: argparse.Namespace) -> int:
    method = args.method if args.b is not None else None
    if args.b is None and not args.lora:
        raise ValueError("nothing to merge: give a model B or at least one --lora FILE:w")
    if args.base is not None and method != "add-difference":
        raise ValueError("--base is the M of --method add-difference")
    out = Path(args.out)
    recipe = MergeRecipe(method=method, alpha=args.alpha, loras=tuple(parse_lora(t) for t in args.lora))
    merge_checkpoints(args.a, out, recipe, b=args.b, base=args.base, format=args.format, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0

"""``nanoldm convert SRC DST --to nanoldm|diffusers|sd``: between our single file, a diffusers folder and an
SD 1.x single file. Nothing already on disk is overwritten unless ``--overwrite`` is given."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model

FORMATS = ("nanoldm", "diffusers", "sd")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint between our format, diffusers and SD single files")
    p.add_argument("src", help="our .safetensors, an SD 1.x .safetensors/.ckpt, or a diffusers folder")
    p.add_argument("dst", help="output file (nanoldm, sd) or folder (diffusers)")
    p.add_argument("--to", choices=FORMATS, default=None,
                   help="output format (default: diffusers when DST has no suffix, else nanoldm)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="store float16 weights (default: as SRC stores them)")
    precision.add_argument("--float", action="store_true", help="store float32 weights (default: as SRC stores them)")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    dst = Path(args.dst)
    fmt = args.to or ("diffusers" if dst.suffix == "" else "nanoldm")
    if dst.exists() and not args.overwrite:
        raise FileExistsError(f"{dst} already exists; pass --overwrite to replace it")
    dtype = torch.float16 if args.half else torch.float32 if args.float else None  # None: keep SRC's dtypes
    model = load_model(args.src, dtype=dtype)
    save_model(model, dst, format=fmt, overwrite=args.overwrite)
    counts = {k: f"{v / 1e6:.1f}M" for k, v in model.num_parameters().items()}
    dtypes = ", ".join(sorted({str(p.dtype).removeprefix("torch.") for p in model.state_dict().values()}))
    print(f"wrote {fmt} checkpoint {dst} ({', '.join(f'{k} {v}' for k, v in counts.items())} parameters, {dtypes})")
    return 0

"""``nanoldm train clip``: the flags of :func:`nanoldm.training.clip.train_clip` (the module's docstring is the
command's description)."""
from __future__ import annotations

import argparse

from nanoldm.cli.train_arguments import add_data_arguments, add_loop_arguments, image_source, loop_config
from nanoldm.training import clip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clip", help="a small CLIP (image and text towers, contrastive loss)",
                       description=clip.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, count=5000)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--image-channels", default="32,64,128", help="one strided conv block per entry")
    add_loop_arguments(p, steps=2000, batch_size=64, lr=1e-3)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = clip.CLIPOptions(embed_dim=args.embed_dim,
                               image_channels=tuple(int(c) for c in args.image_channels.split(",")))
    clip.train_clip(image_source(args), loop_config(args), options, resume=args.resume)
    return 0

"""``nanoldm caption DIR --clip PATH``: caption the images of a folder that have no caption, with a CLIP
interrogator (:mod:`nanoldm.evaluation.captioner`): the best of every caption the shapes vocabulary can form.
Writes ``NAME.txt`` beside each uncaptioned image; an image with a caption (a ``.txt`` or a
``metadata.jsonl`` row) is left alone, and no existing file is ever overwritten.
The work is :func:`nanoldm.data.captioning.caption_folder`; this file parses its arguments."""
from __future__ import annotations

import argparse

from nanoldm.data.captioning import caption_folder


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption the uncaptioned images of a folder with a trained CLIP",
                       description=__doc__)
    p.add_argument("dir", help="image folder")
    p.add_argument("--clip", required=True, help="a clip.safetensors written by 'nanoldm train clip'")
    p.add_argument("--extra-shapes", default="", help="also consider 'star', 'heart' or 'star,heart'")
    p.add_argument("--generic-noun", action="store_true",
                   help="also consider captions naming an object only 'shape' (data exported with --generic-extra)")
    p.add_argument("--pair-sizes", action="store_true", help="consider sizes in two-object captions too")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    extra = tuple(s.strip() for s in args.extra_shapes.split(",") if s.strip())
    caption_folder(args.dir, args.clip, extra_shapes=extra, generic_noun=args.generic_noun,
                   pair_sizes=args.pair_sizes, batch_size=args.batch_size)
    return 0

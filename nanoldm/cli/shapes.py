"""``nanoldm shapes export DIR --count N``: write the shapes world as an image folder with captions
(``.txt`` beside each image and a ``metadata.jsonl``), ready for training or for any other tool."""
from __future__ import annotations

import argparse

from nanoldm.data.export import export_world
from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.vocabulary import STYLES, parse_combinations, parse_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shapes", help="the procedural shapes world (export it as an image folder)")
    actions = p.add_subparsers(dest="shapes_command", required=True, metavar="ACTION")
    e = actions.add_parser("export", help="write N images with captions and metadata.jsonl into DIR")
    e.add_argument("dir", help="output folder (created if missing; must be empty unless --overwrite)")
    e.add_argument("--count", type=int, required=True, help="number of images")
    e.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    e.add_argument("--size", type=int, default=32, help="image side, 32 or 64 (default 32)")
    e.add_argument("--objects", default="1,2", help="objects per image, '1', '2' or '1,2' (default)")
    e.add_argument("--held-out", default="", help="combinations to hold out, e.g. 'green triangle,red circle'")
    e.add_argument("--split", choices=("train", "held_out"), default="train",
                   help="train: never a held-out combination; held_out: always one (default train)")
    e.add_argument("--extra-shapes", default="", help="extra shapes to draw too: 'star', 'heart' or 'star,heart'")
    e.add_argument("--only-shapes", default="", help="draw only these shapes, e.g. 'star' (with --extra-shapes star)")
    e.add_argument("--generic-extra", action="store_true", help="caption extra shapes with the word 'shape'")
    e.add_argument("--generic-share", type=float, default=0.0,
                   help="share of the other shapes also captioned 'shape', so that the word means any shape")
    e.add_argument("--style", default="light", choices=tuple(STYLES),
                   help="picture style (the background): light (the default), dark or paper")
    e.add_argument("--extra-weight", type=float, default=1.0,
                   help="how often an extra shape is drawn relative to a base shape (default 1: as often)")
    e.add_argument("--sizes", default="", help="draw only these sizes, e.g. 'large' (default: every size)")
    e.add_argument("--pair-sizes", action="store_true", help="name sizes in two-object captions too")
    e.add_argument("--partial", type=float, default=0.0,
                   help="chance that a caption leaves out each of a lone object's size and position (and names "
                        "each size in a pair): teaches that an unnamed attribute is free (default 0: full captions)")
    e.add_argument("--uncaptioned", type=float, default=0.0,
                   help="share of the images (the last ones) written without a caption, for 'nanoldm caption'")
    e.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    e.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    world = ShapesWorld(size=args.size, seed=args.seed, count=args.count, objects=_int_list(args.objects),
                        held_out=parse_combinations(args.held_out), split=args.split,
                        extra_shapes=parse_names(args.extra_shapes),
                        generic_extra=args.generic_extra, pair_sizes=args.pair_sizes,
                        only_shapes=parse_names(args.only_shapes), generic_share=args.generic_share,
                        style=args.style, extra_weight=args.extra_weight, sizes=parse_names(args.sizes),
                        partial=args.partial)
    export_world(world, args.dir, overwrite=args.overwrite, uncaptioned=args.uncaptioned)
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--objects must be '1', '2' or '1,2', got {text!r}") from None


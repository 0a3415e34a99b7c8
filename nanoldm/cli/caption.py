"""``nanoldm caption DIR --clip PATH``: caption the images of a folder that have no caption, with a CLIP
interrogator (:mod:`nanoldm.evaluation.captioner`): the best of every caption the shapes vocabulary can form.
Writes ``NAME.txt`` beside each uncaptioned image; an image with a caption (a ``.txt`` or a
``metadata.jsonl`` row) is left alone, and no existing file is ever overwritten."""
from __future__ import annotations

import argparse


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
    import torch

    from nanoldm.data.folder import ImageFolder
    from nanoldm.data.vocabulary import BASE_SHAPES, EXTRA_SHAPES, GENERIC_NOUN
    from nanoldm.evaluation.captioner import Captioner, all_captions
    from nanoldm.checkpoint.parts import load_clip

    extra = tuple(s.strip() for s in args.extra_shapes.split(",") if s.strip())
    unknown = [s for s in extra if s not in EXTRA_SHAPES]
    if unknown:
        raise ValueError(f"unknown extra shape(s) {unknown} (known: {', '.join(EXTRA_SHAPES)})")
    clip = load_clip(args.clip)  # fail on a bad --clip before reading the folder
    folder = ImageFolder(args.dir, size=clip.cfg.image_size)
    todo = [i for i, c in enumerate(folder.captions) if c is None and not folder.paths[i].with_suffix(".txt").exists()]
    if not todo:
        print(f"{args.dir}: all {len(folder)} images have captions; nothing to do")
        return 0
    nouns = BASE_SHAPES + extra + ((GENERIC_NOUN,) if args.generic_noun else ())
    captioner = Captioner(clip, all_captions(nouns, pair_sizes=args.pair_sizes),
                          batch_size=args.batch_size)
    images = torch.stack([folder[i]["image"] for i in todo])
    captions = captioner(images, progress=True)
    written = sum(_write_new(folder.paths[i].with_suffix(".txt"), c) for i, c in zip(todo, captions))
    print(f"wrote {written} captions ({len(folder) - len(todo)} images already had one) in {args.dir}")
    _report_against_reference(folder, todo, captions)
    return 0


def _report_against_reference(folder, todo: list[int], captions: list[str]) -> None:
    """A shapes export made with ``--uncaptioned`` keeps each withheld caption as "reference_caption":
    print how many of the new captions name the same picture."""
    from nanoldm.evaluation.captioner import same_caption

    pairs = [(c, folder.metadata[i].get("reference_caption")) for i, c in zip(todo, captions)]
    pairs = [(c, ref) for c, ref in pairs if ref]
    if pairs:
        right = sum(same_caption(c, ref) for c, ref in pairs)
        print(f"captions right against the withheld reference: {right / len(pairs):.1%} ({right} of {len(pairs)})")


def _write_new(path, text: str) -> bool:
    """Create ``path`` holding ``text`` + newline; False (and nothing written) if it already exists."""
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text + "\n")
    except FileExistsError:
        return False
    return True

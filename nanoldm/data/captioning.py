"""Caption the images of a folder that have none, with a trained CLIP as an interrogator
(:mod:`nanoldm.evaluation.captioner`): the best of every caption the shapes vocabulary can form. Writes
``NAME.txt`` beside each uncaptioned image; an image with a caption (a ``.txt`` or a ``metadata.jsonl`` row)
is left alone, and no existing file is ever overwritten. ``nanoldm caption`` is this function's command line."""
from __future__ import annotations

from pathlib import Path

import torch

from nanoldm.checkpoint.parts import load_clip
from nanoldm.data.folder import ImageFolder
from nanoldm.data.vocabulary import BASE_SHAPES, EXTRA_SHAPES, GENERIC_NOUN
from nanoldm.evaluation.captioner import Captioner, all_captions, same_caption


def caption_folder(folder: str | Path, clip: str | Path, *, extra_shapes: tuple[str, ...] = (),
                   generic_noun: bool = False, pair_sizes: bool = False, batch_size: int = 256) -> int:
    """Write a caption beside each uncaptioned image of ``folder``; returns how many were written.
    ``extra_shapes`` ('star', 'heart') and ``generic_noun`` ('shape') widen the candidate captions."""
    unknown = [s for s in extra_shapes if s not in EXTRA_SHAPES]
    if unknown:
        raise ValueError(f"unknown extra shape(s) {unknown} (known: {', '.join(EXTRA_SHAPES)})")
    model = load_clip(clip)  # fail on a bad CLIP before reading the folder
    images = ImageFolder(folder, size=model.cfg.image_size)
    todo = [i for i, c in enumerate(images.captions) if c is None and not images.paths[i].with_suffix(".txt").exists()]
    if not todo:
        print(f"{folder}: all {len(images)} images have captions; nothing to do")
        return 0
    nouns = BASE_SHAPES + tuple(extra_shapes) + ((GENERIC_NOUN,) if generic_noun else ())
    captioner = Captioner(model, all_captions(nouns, pair_sizes=pair_sizes), batch_size=batch_size)
    captions = captioner(torch.stack([images[i]["image"] for i in todo]), progress=True)
    written = sum(_write_new(images.paths[i].with_suffix(".txt"), c) for i, c in zip(todo, captions))
    print(f"wrote {written} captions ({len(images) - len(todo)} images already had one) in {folder}")
    _report_against_reference(images, todo, captions)
    return written


def _report_against_reference(folder: ImageFolder, todo: list[int], captions: list[str]) -> None:
    """A shapes export made with ``uncaptioned`` keeps each withheld caption as "reference_caption":
    print how many of the new captions name the same picture."""
    pairs = [(c, folder.metadata[i].get("reference_caption")) for i, c in zip(todo, captions)]
    pairs = [(c, ref) for c, ref in pairs if ref]
    if pairs:
        right = sum(same_caption(c, ref) for c, ref in pairs)
        print(f"captions right against the withheld reference: {right / len(pairs):.1%} ({right} of {len(pairs)})")


def _write_new(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` + newline; False (and nothing written) if it already exists."""
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text + "\n")
    except FileExistsError:
        return False
    return True

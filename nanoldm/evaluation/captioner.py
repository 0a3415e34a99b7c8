"""A CLIP interrogator for the shapes world: caption an image with the best of every caption the shapes
vocabulary can form.

The candidates (:func:`all_captions`) are every caption of the data set's grammar (``data/vocabulary.py``):
single objects with size, colour, shape and position (2 x 6 x 3 x 9 = 324 with the base shapes) and two
objects with a relation (18 x 18 x 4 = 1296; with ``pair_sizes`` 5184; star and heart raise both). That is
few enough to score exhaustively: the candidates are encoded once, then each image costs one matrix product,
so no hierarchical search (count, then colour, shape, ...) is needed.

"A left of B" and "B right of A" name the same picture; both are candidates, and :func:`same_caption`
counts either as right.
"""
from __future__ import annotations

import itertools

import torch
from tqdm import tqdm

from nanoldm.data.vocabulary import (BASE_SHAPES, COLOURS, GENERIC_NOUN, POSITIONS, RELATIONS, SIZES, caption_for,
                                     parse_caption)
from nanoldm.text.clip_model import CLIP
from nanoldm.text.tokenizer import CLIPTokenizer

MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def all_captions(shapes: tuple[str, ...] = BASE_SHAPES, *, pair_sizes: bool = False) -> list[str]:
    """Every single-object caption (with size and position), then every two-object caption (with sizes
    if ``pair_sizes``), as the shapes world writes them."""
    singles = [caption_for([{"size": z, "colour": c, "shape": s, "position": p}])
               for z, c, s, p in itertools.product(SIZES, COLOURS, shapes, POSITIONS)]
    sizes = list(SIZES) if pair_sizes else [None]
    objects = [{"size": z, "colour": c, "shape": s} for z, c, s in itertools.product(sizes, COLOURS, shapes)]
    pairs = [caption_for([a, b], r) for a, b, r in itertools.product(objects, objects, RELATIONS)]
    return singles + pairs


def same_caption(a: str, b: str) -> bool:
    """True when two captions name the same picture: equal, or a two-object caption and its mirror. The generic
    noun "shape" names any shape, so "a red shape" and "a red circle" agree."""
    pa, pb = parse_caption(a), parse_caption(b)
    if pa.relation == pb.relation and _same_objects(pa.objects, pb.objects):
        return True
    return pa.relation is not None and pb.relation == MIRROR[pa.relation] and _same_objects(pa.objects,
                                                                                           pb.objects[::-1])


def _same_objects(a: tuple[dict, ...], b: tuple[dict, ...]) -> bool:
    def known(obj: dict) -> dict:
        return {k: v for k, v in obj.items() if not (k == "shape" and v == GENERIC_NOUN)}

    return len(a) == len(b) and all(known(x).items() <= y.items() or known(y).items() <= x.items()
                                    if GENERIC_NOUN in (x["shape"], y["shape"]) else x == y for x, y in zip(a, b))


class Captioner:
    """``Captioner(clip)(images) -> captions``: the best-scoring candidate caption for each image."""

    def __init__(self, clip: CLIP, candidates: list[str] | None = None, *,
                 tokenizer: CLIPTokenizer | None = None, batch_size: int = 256):
        self.clip, self.batch_size = clip.eval(), batch_size
        self.candidates = candidates if candidates is not None else all_captions()
        if not self.candidates:
            raise ValueError("no candidate captions to choose from")
        tokenizer = tokenizer or CLIPTokenizer.default()
        self.text_emb = self._encode_texts(tokenizer)  # (M, D)

    @torch.no_grad()
    def _encode_texts(self, tokenizer: CLIPTokenizer) -> torch.Tensor:
        ids = tokenizer(self.candidates, max_length=self.clip.cfg.text.max_positions)  # (M, L)
        device = self.clip.logit_scale.device
        return torch.cat([self.clip.encode_text(chunk.to(device), tokenizer.eos_id)
                          for chunk in ids.split(self.batch_size)])

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each image with each candidate. Shapes: (N, 3, H, W) -> (N, M)."""
        device = self.text_emb.device
        return torch.cat([self.clip.encode_image(chunk.to(device)) @ self.text_emb.T
                          for chunk in images.split(self.batch_size)])

    def __call__(self, images: torch.Tensor, *, progress: bool = False) -> list[str]:
        """The best candidate per image. Shapes: images (N, 3, H, W) in [-1, 1]."""
        best = []
        for chunk in tqdm(images.split(self.batch_size), desc="captioning", unit="batch", disable=not progress):
            best += self.scores(chunk).argmax(1).tolist()
        return [self.candidates[i] for i in best]


def caption_accuracy(captioner: Captioner, images: torch.Tensor, truth: list[str]) -> dict[str, float]:
    """Fraction of images whose chosen caption names the same picture as ``truth`` (see :func:`same_caption`):
    overall ("exact"), on single-object and on two-object images."""
    right = [same_caption(c, t) for c, t in zip(captioner(images), truth)]
    single = [r for r, t in zip(right, truth) if parse_caption(t).relation is None]
    pair = [r for r, t in zip(right, truth) if parse_caption(t).relation is not None]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {"exact": mean(right), "single": mean(single), "pair": mean(pair)}

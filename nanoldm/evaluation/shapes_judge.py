"""The shapes-world judge: reads an image back into objects (colour, shape, size, position) with no learned model,
and scores an image against the prompt it was generated from.

Reading an image (``judge``):
1. Background: the per-channel median of the border pixels.
2. Foreground: pixels farther than ``FG_THRESHOLD`` from the background (RGB, 0..255), each given the palette
   colour that explains it best as a mix with the background; 8-connected components of one colour, those
   smaller than ``min_area`` of the image dropped (speckles).
3. Colour: the median of a component's most saturated pixels, named by the palette colour that explains it best
   as a mix with the background (so faded or blurred objects keep their name); none within ``COLOUR_REJECT``.
4. Coverage: each pixel's share of that colour against the background (0..1), which keeps the antialiasing.
5. Shape: for every candidate shape, the box that gives the template the component's centroid and spread
   (first and second moments), the template drawn in that box, and the shape whose drawing differs least.
6. Size: the fitted box's side against the midpoint (geometric mean) of the two sizes; position: the grid
   cell holding the box centre.

Scoring (``score``): prompt objects are matched to readings by the assignment that agrees most, colour counting
most, then shape, size, position and relation. "A left of B" holds when B's centre is to the right of A's by
more than it is above or below it (likewise for the others). ``all_correct`` also asks for exactly as many
objects as the prompt names.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from nanoldm.data.shapes import coverage
from nanoldm.data.vocabulary import (BASE_SHAPES, COLOURS, EXTRA_SHAPES, GENERIC_NOUN, RELATIONS, SIZES, STYLES,
                                     Prompt, parse_caption, position_of)

FG_THRESHOLD = 80.0
COLOUR_REJECT = 70.0
MIN_AREA = 0.004  # of the image
ALPHA_FLOOR = 0.08  # coverage below this is noise
GROW = 2  # pixels around a component that may hold its blurred or antialiased edge
SIZE_SPLIT = float(np.sqrt(SIZES["small"] * SIZES["large"]))
MATCH_WEIGHTS = {"colour": 16, "shape": 4, "size": 2, "position": 2, "relation": 1}


@dataclass(frozen=True)
class ObjectReading:
    """One object found in an image; box (x0, y0, x1, y1) and area normalised to the image; colour None when
    no palette colour is close; shape_error in [0, 1]: how far the best template is from the pixels."""
    colour: str | None
    shape: str
    size: str
    position: str
    box: tuple[float, float, float, float]
    area: float
    shape_error: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def judge(image, shapes: tuple[str, ...] = BASE_SHAPES, min_area: float = MIN_AREA) -> list[ObjectReading]:
    """The objects in ``image`` (PIL image, or (H, W, 3) array: uint8, or float in [0, 1]), largest first;
    ``shapes`` are the candidate shapes (add ``EXTRA_SHAPES`` to read stars and hearts)."""
    rgb = _as_array(image)
    h, w, _ = rgb.shape
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(rgb - bg, axis=-1)
    labels = _segment(rgb, bg, dist > FG_THRESHOLD, max(1.0, min_area * h * w))
    readings = [_read_object(rgb, bg, dist, labels, k, shapes) for k in range(1, labels.max() + 1)]
    return sorted(readings, key=lambda r: -r.area)


def style_of(image) -> str:
    """The picture style (``STYLES``) whose background is nearest the median of the border pixels."""
    rgb = _as_array(image)
    bg = np.median(np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]), axis=0)
    return min(STYLES, key=lambda name: float(np.linalg.norm(bg - np.array(STYLES[name], np.float32))))


def _as_array(image) -> np.ndarray:
    """(H, W, 3) float32 in 0..255 from a PIL image or a uint8 / float array."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {arr.shape}")
    return arr.astype(np.float32) * (255.0 if arr.dtype.kind == "f" else 1.0)


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a bool mask: (H, W) int labels, 0 for background, 1..n for components."""
    h, w = mask.shape
    none = h * w
    label = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:  # every pixel takes the smallest label in its 3x3 neighbourhood until nothing changes
        padded = np.pad(label, 1, constant_values=none)
        neighbours = np.min([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
        new = np.where(mask, neighbours, none)
        if np.array_equal(new, label):
            break
        label = new
    roots = np.unique(label[mask])
    out = np.zeros((h, w), dtype=np.int64)
    out[mask] = np.searchsorted(roots, label[mask]) + 1
    return out


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r + 1)^2 square."""
    h, w = mask.shape
    padded = np.pad(mask, r)
    return np.max([padded[dy:dy + h, dx:dx + w] for dy in range(2 * r + 1) for dx in range(2 * r + 1)], axis=0)


def _unmix_errors(rgb: np.ndarray, bg: np.ndarray, a_min: float) -> np.ndarray:
    """(..., K) distance from each colour in ``rgb`` (..., 3) to its best mix bg + a (c - bg), a in
    [a_min, 1.15], for every palette colour c (in ``COLOURS`` order)."""
    d = np.array(list(COLOURS.values()), np.float32) - bg  # (K, 3)
    p = rgb - bg
    a = np.clip(p @ d.T / (d * d).sum(1), a_min, 1.15)  # (..., K)
    return np.linalg.norm(p[..., None, :] - a[..., None] * d, axis=-1)


def _segment(rgb: np.ndarray, bg: np.ndarray, fg: np.ndarray, min_pixels: float) -> np.ndarray:
    """Step 2: (H, W) labels, 0 for background, 1..n for objects: 8-connected runs of foreground pixels that
    share their best palette colour (any mix with the background), so touching objects of different colours
    stay apart; runs under ``min_pixels`` are dropped."""
    err = _unmix_errors(rgb, bg, 0.0)
    hue = np.where(err.min(-1) <= COLOUR_REJECT, err.argmin(-1), len(COLOURS))  # len(COLOURS): no palette colour
    labels = np.zeros(fg.shape, np.int64)
    for c in np.unique(hue[fg]):
        runs = _components(fg & (hue == c))
        for k in range(1, runs.max() + 1):
            if (runs == k).sum() >= min_pixels:
                labels[runs == k] = labels.max() + 1
    return labels


def _name_colour(colour: np.ndarray, bg: np.ndarray) -> str | None:
    """The palette colour that best explains ``colour`` as a mostly saturated mix with the background."""
    err = _unmix_errors(colour, bg, 0.6)
    return list(COLOURS)[int(err.argmin())] if err.min() <= COLOUR_REJECT else None


def _read_object(rgb, bg, dist, labels, k, shapes) -> ObjectReading:
    """Steps 3-6 of the module docstring for component ``k``."""
    h, w, _ = rgb.shape
    ys, xs = np.nonzero(labels == k)
    core = dist[ys, xs] >= 0.7 * np.percentile(dist[ys, xs], 90)
    colour = np.median(rgb[ys[core], xs[core]], axis=0)
    y0, y1 = max(ys.min() - GROW, 0), min(ys.max() + GROW + 1, h)
    x0, x1 = max(xs.min() - GROW, 0), min(xs.max() + GROW + 1, w)
    win = labels[y0:y1, x0:x1]
    region = _dilate(win == k, GROW) & ~_dilate((win != k) & (win != 0), 1)
    d = colour - bg
    alpha = np.clip((rgb[y0:y1, x0:x1] - bg) @ d / np.dot(d, d), 0, 1)
    alpha = np.where(region & (alpha > ALPHA_FLOOR), alpha, 0).astype(np.float32)
    if alpha.sum() == 0:  # a component of mixed colours that its median does not explain: take it as drawn
        alpha = (win == k).astype(np.float32)
    shape, box, err = _fit_shape(alpha, shapes)
    bx0, by0, bx1, by1 = box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0
    side = np.sqrt(max(bx1 - bx0, 0) * max(by1 - by0, 0)) / np.sqrt(h * w)
    return ObjectReading(
        colour=_name_colour(colour, bg), shape=shape, size="large" if side > SIZE_SPLIT else "small",
        position=position_of((bx0 + bx1) / 2 / w, (by0 + by1) / 2 / h),
        box=(float(bx0 / w), float(by0 / h), float(bx1 / w), float(by1 / h)), area=float(alpha.sum() / (h * w)),
        shape_error=err)


def _moments(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """Centroid (cx, cy) and standard deviations (sx, sy) of a coverage map, pixel centres at k + 0.5,
    with the 1/12 px^2 each pixel's own extent adds back."""
    ys, xs = np.indices(alpha.shape) + 0.5
    m = alpha.sum()
    cx, cy = (alpha * xs).sum() / m, (alpha * ys).sum() / m
    vx = (alpha * (xs - cx) ** 2).sum() / m + 1 / 12
    vy = (alpha * (ys - cy) ** 2).sum() / m + 1 / 12
    return cx, cy, np.sqrt(vx), np.sqrt(vy)


@lru_cache(maxsize=None)
def _unit_moments(shape: str) -> tuple[float, float, float, float]:
    """Centroid and spread of ``shape`` drawn in the unit box."""
    n = 256
    return tuple(v / n for v in _moments(coverage(shape, (0, 0, n, n), n, n)))


def _fit_shape(alpha: np.ndarray, shapes: tuple[str, ...]) -> tuple[str, tuple, float]:
    """Best template for a coverage map: (shape, box in window pixels, error = sum |alpha - t| / sum (alpha + t))."""
    cx, cy, sx, sy = _moments(alpha)
    best = None
    for shape in shapes:
        ux, uy, usx, usy = _unit_moments(shape)
        bw, bh = sx / usx, sy / usy
        box = (cx - ux * bw, cy - uy * bh, cx - ux * bw + bw, cy - uy * bh + bh)
        t = coverage(shape, box, *alpha.shape)
        err = float(np.abs(alpha - t).sum() / (alpha.sum() + t.sum()))
        if best is None or err < best[2]:
            best = (shape, box, err)
    return best


def relation_holds(a: ObjectReading, b: ObjectReading, relation: str) -> bool:
    """Whether 'a <relation> b': b lies in that direction from a, more along it than across it."""
    dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
    along, across = {"left of": (dx, dy), "right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return bool(along > abs(across))


def score(image, prompt: str | Prompt, shapes: tuple[str, ...] = ()) -> dict:
    """How well ``image`` follows ``prompt``. Returns {"objects": per prompt object {attribute: bool} for the
    attributes it names, "relation": bool (two objects), "count": bool, one bool per named attribute (right for
    every object), "all_correct": bool, "readings": the ObjectReading matched to each prompt object or None}."""
    prompt = parse_caption(prompt) if isinstance(prompt, str) else prompt
    named = tuple(o["shape"] for o in prompt.objects if o["shape"] in EXTRA_SHAPES)
    readings = judge(image, BASE_SHAPES + tuple(dict.fromkeys(named + tuple(shapes))))
    padded = readings + [None] * len(prompt.objects)
    best = max(itertools.permutations(padded, len(prompt.objects)), key=lambda m: _agreement(prompt, m)[0])
    _, per_object, relation = _agreement(prompt, best)
    result = {"objects": per_object, "count": len(readings) == len(prompt.objects)}
    if relation is not None:
        result["relation"] = relation
    for attr in ("colour", "shape", "size", "position"):
        checks = [o[attr] for o in per_object if attr in o]
        if checks:
            result[attr] = all(checks)
    result["all_correct"] = all(v for k, v in result.items() if k != "objects")
    result["readings"] = list(best)
    return result


def _agreement(prompt: Prompt, match) -> tuple[int, list[dict], bool | None]:
    """(weighted agreement, per-object attribute checks, relation check) of one prompt-to-readings matching."""
    per_object = []
    for want, got in zip(prompt.objects, match):
        checks = {attr: got is not None and getattr(got, attr) == want[attr]
                  for attr in ("colour", "shape", "size", "position")
                  if want.get(attr) is not None and not (attr == "shape" and want[attr] == GENERIC_NOUN)}
        per_object.append(checks)
    relation = None
    if prompt.relation in RELATIONS:
        relation = None not in match[:2] and relation_holds(match[0], match[1], prompt.relation)
    total = sum(MATCH_WEIGHTS[a] for checks in per_object for a, ok in checks.items() if ok)
    return total + MATCH_WEIGHTS["relation"] * bool(relation), per_object, relation

"""The shapes world: a procedural data set of one or two coloured shapes on a plain background.

Every image is a pure function of (seed, split, index): ``ShapesWorld(seed=s).sample(i)`` draws from its own
``numpy.random.default_rng([s, split, i])``, so sample i is reproducible alone. Shapes are polygons drawn at
4x the image size and box-filtered down, which antialiases edges the way a camera would; the same coverage
gives the masks (coverage >= 0.5). Words, class ids and the caption grammar live in ``vocabulary.py``.

Placement:
- one object: the box centre is its grid cell's centre, jittered by up to 0.04 of the image, kept inside;
- two objects: the relation decides the axis; along it the boxes are apart by at least ``GAP``, across it
  the centres differ by at most half the distance along it, so exactly one relation describes the pair.
"""
from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from nanoldm.data.vocabulary import (BASE_SHAPES, COLOURS, EXTRA_SHAPES, GENERIC_NOUN, NO_CLASS, POSITIONS, RELATIONS,
                                     SHAPES, SIZES, STYLES, caption_for, class_id, position_of)

IMAGE_SIZES = (32, 64)
SUPERSAMPLE = 4
SIZE_JITTER = 0.08  # relative
POSITION_JITTER = 0.04  # of the image side
MARGIN = 0.02  # boxes stay this far inside the image
GAP = 0.06  # two objects' boxes are at least this far apart along their relation's axis
# (colour, shape) pairs the built-in model never saw in training; `nanoldm eval` scores them separately
DEFAULT_HELD_OUT = frozenset({("green", "triangle"), ("purple", "circle")})


class Split(str, enum.Enum):
    TRAIN = "train"  # never contains a held-out (colour, shape) combination
    HELD_OUT = "held_out"  # every image contains at least one held-out combination


@lru_cache(maxsize=None)
def shape_polygon(shape: str) -> np.ndarray:
    """(K, 2) outline of ``shape`` with its bounding box exactly [0, 1]^2 (x right, y down)."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    elif shape == "triangle":
        pts = np.array([[0.5, 0], [1, 1], [0, 1]], dtype=float)
    elif shape == "star":  # five points, inner radius half the outer one, a point upwards
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "heart":  # the classic parametric heart, y flipped so the point is at the bottom
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        pts = np.stack([16 * np.sin(t) ** 3, -y], 1)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    pts = pts - pts.min(0)
    return pts / pts.max(0)


def coverage(shape: str, box: tuple[float, float, float, float], height: int, width: int,
             origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(height, width) float32 fraction of each pixel covered by ``shape`` drawn in ``box`` = (x0, y0, x1, y1)
    in pixel units; ``origin`` is the pixel position of the returned window's top-left corner."""
    x0, y0, x1, y1 = (SUPERSAMPLE * (v - o) for v, o in zip(box, origin * 2))
    # PIL floors the vertices and fills inclusively, so a box [a, b] in fine pixels is drawn as [a + .5, b - .5]
    size = np.maximum([x1 - x0 - 1, y1 - y0 - 1], 0)
    pts = shape_polygon(shape) * size + [x0 + 0.5, y0 + 0.5]
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: its attributes and its box (x0, y0, x1, y1), normalised to [0, 1]."""
    colour: str
    shape: str
    size: str
    position: str
    box: tuple[float, float, float, float]

    @property
    def class_id(self) -> int:
        return class_id(self.colour, self.shape)

    def to_dict(self) -> dict:
        return {**asdict(self), "box": list(self.box), "class_id": self.class_id}


@dataclass(frozen=True)
class ShapeSample:
    """One image of the shapes world. Shapes: image (H, W, 3) uint8; masks (N, H, W) bool, one per object;
    layout: per object (class id, normalised box), in caption order."""
    image: np.ndarray
    caption: str
    class_label: int
    layout: tuple[tuple[int, tuple[float, float, float, float]], ...]
    masks: np.ndarray
    objects: tuple[ShapeObject, ...]
    relation: str | None

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)


class ShapesWorld:
    """A deterministic data set of ``count`` images; ``world[i]`` / ``world.sample(i)`` / ``iter(world)``.

    objects: how many objects an image may hold, drawn uniformly from this tuple (1, 2 or both).
    held_out: (colour, shape) pairs that ``Split.TRAIN`` never draws and ``Split.HELD_OUT`` always includes.
    extra_shapes: shapes from ``EXTRA_SHAPES`` ("star", "heart") drawn besides the base three;
    generic_extra: caption those with the noun "shape" (for textual inversion).
    generic_share: the share of base-shape objects also captioned "shape", so that the word means any shape
    (with generic_extra, a model then has no word for the extra shape; textual inversion must find one).
    pair_sizes: name the sizes in two-object captions too.
    only_shapes: draw only these shapes (e.g. ("star",) for a textual-inversion set); () draws every shape.
    style: the picture style, a key of ``STYLES`` ("light" background, or "dark"); never named in captions.
    extra_weight: how often each extra shape is drawn relative to a base shape (1: as often). With
    ``generic_extra``, ``extra_weight == generic_share`` makes "shape" name every shape equally often, so a
    model drawing "a red shape" picks among them at chance.
    sizes: draw only these sizes (e.g. ("large",)); () draws every size.
    partial: the share of captions that leave an attribute unnamed, drawn per attribute: a lone object's size and
    its position are each left out with this probability, and each object of a pair has its size named with it
    (always with ``pair_sizes``). A model trained so learns that an unnamed attribute is free, not another scene.
    """

    def __init__(self, *, size: int = 32, seed: int = 0, count: int = 10_000, objects: tuple[int, ...] = (1, 2),
                 held_out: frozenset[tuple[str, str]] = frozenset(), split: Split | str = Split.TRAIN,
                 extra_shapes: tuple[str, ...] = (), generic_extra: bool = False, pair_sizes: bool = False,
                 only_shapes: tuple[str, ...] = (), generic_share: float = 0.0, style: str = "light",
                 extra_weight: float = 1.0, sizes: tuple[str, ...] = (), partial: float = 0.0):
        if size not in IMAGE_SIZES:
            raise ValueError(f"image size must be one of {IMAGE_SIZES}, got {size}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not objects or any(n not in (1, 2) for n in objects):
            raise ValueError(f"objects per image must be 1 and/or 2, got {objects}")
        unknown = [s for s in extra_shapes if s not in EXTRA_SHAPES]
        if unknown:
            raise ValueError(f"unknown extra shape(s) {unknown} (known: {', '.join(EXTRA_SHAPES)})")
        self.size, self.seed, self.count, self.objects = size, seed, count, tuple(objects)
        self.split = Split(split)
        self.shapes = BASE_SHAPES + tuple(s for s in EXTRA_SHAPES if s in extra_shapes)
        if any(s not in self.shapes for s in only_shapes):
            raise ValueError(f"only_shapes {tuple(only_shapes)} must be among the drawn shapes {self.shapes} "
                             f"(add star or heart with extra_shapes)")
        self.drawn = tuple(only_shapes) or self.shapes
        self.held_out = frozenset(held_out)
        self.generic_extra, self.pair_sizes = generic_extra, pair_sizes
        if not 0.0 <= generic_share <= 1.0:
            raise ValueError(f"generic_share must be in [0, 1], got {generic_share}")
        self.generic_share = generic_share
        if not 0.0 <= partial <= 1.0:
            raise ValueError(f"partial must be in [0, 1], got {partial}")
        self.partial = partial
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r} (known: {', '.join(STYLES)})")
        self.style = style
        if extra_weight <= 0:
            raise ValueError(f"extra_weight must be positive, got {extra_weight}")
        self.extra_weight = float(extra_weight)
        if any(z not in SIZES for z in sizes):
            raise ValueError(f"sizes {tuple(sizes)} must be among {tuple(SIZES)}")
        self.sizes = tuple(sizes) or tuple(SIZES)
        self._check_held_out()

    def _check_held_out(self) -> None:
        for colour, shape in self.held_out:
            if colour not in COLOURS or shape not in self.shapes:
                raise ValueError(f"held-out combination {colour!r} {shape!r} is not in this world "
                                 f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(self.shapes)})")
        if len(self.held_out) == len(COLOURS) * len(self.shapes):
            raise ValueError("every combination is held out; the training split would be empty")
        if self.split is Split.HELD_OUT and not self.held_out:
            raise ValueError("the held-out split needs at least one held-out combination")

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> ShapeSample:
        if not 0 <= i < self.count:
            raise IndexError(f"index {i} out of range for {self.count} samples")
        return self.sample(i)

    def __iter__(self):
        return (self.sample(i) for i in range(self.count))

    def sample(self, i: int) -> ShapeSample:
        """Image ``i`` (any i >= 0), drawn from its own generator seeded by (seed, split, i)."""
        rng = np.random.default_rng([self.seed, list(Split).index(self.split), i])
        n = int(rng.choice(self.objects))
        combos = self._draw_combos(rng, n)
        sizes = [str(rng.choice(list(self.sizes))) for _ in range(n)]
        scale = [SIZES[s] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) for s in sizes]
        if n == 1:
            relation, centres = None, [_place_one(rng, scale[0])]
        else:
            relation = str(rng.choice(RELATIONS))
            centres = _place_two(rng, relation, scale)
        boxes = [tuple(float(v) for v in (cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2))
                 for (cx, cy), s in zip(centres, scale)]
        objs = tuple(ShapeObject(c, sh, sz, position_of(cx, cy), b)
                     for (c, sh), sz, (cx, cy), b in zip(combos, sizes, centres, boxes))
        # drawn last (and only when asked) so that every other draw, hence every image, is unchanged by it
        generic = [bool(rng.random() < self.generic_share) for _ in objs] if self.generic_share else [False] * n
        named = [self._named(o, n, g) for o, g in zip(objs, generic)]
        if self.partial:  # drawn after everything else, so that the images are those of partial=0
            named = [self._leave_out(rng, d, o, n) for d, o in zip(named, objs)]
        return self._render(objs, relation, named)

    def _draw_combos(self, rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
        """(colour, shape) per object, honouring the split's hold-outs."""
        all_combos = [(c, s) for s in self.drawn for c in COLOURS]
        allowed = [c for c in all_combos if c not in self.held_out]
        if self.extra_weight == 1.0 or all(s in BASE_SHAPES for _, s in allowed):
            combos = [allowed[rng.integers(len(allowed))] for _ in range(n)]
        else:
            weights = np.array([1.0 if s in BASE_SHAPES else self.extra_weight for _, s in allowed])
            combos = [allowed[i] for i in rng.choice(len(allowed), size=n, p=weights / weights.sum())]
        if self.split is Split.HELD_OUT:
            held = sorted(self.held_out)
            combos[rng.integers(n)] = held[rng.integers(len(held))]
        return combos

    def _render(self, objs: tuple[ShapeObject, ...], relation: str | None, named: list[dict]) -> ShapeSample:
        """Composite the objects' coverage over the background; masks are coverage >= 0.5."""
        hw = self.size
        image = np.broadcast_to(np.array(STYLES[self.style], np.float32), (hw, hw, 3)).copy()
        covers = [coverage(o.shape, tuple(v * hw for v in o.box), hw, hw) for o in objs]
        for o, a in zip(objs, covers):
            image = image * (1 - a[..., None]) + np.array(COLOURS[o.colour], np.float32) * a[..., None]
        masks = np.stack([a >= 0.5 for a in covers])
        return ShapeSample(
            image=np.round(image).astype(np.uint8), caption=caption_for(named, relation),
            class_label=objs[0].class_id if len(objs) == 1 else NO_CLASS,
            layout=tuple((o.class_id, o.box) for o in objs), masks=masks, objects=objs, relation=relation)

    def _named(self, obj: ShapeObject, n: int, generic: bool = False) -> dict:
        """The attributes a caption names for ``obj`` in an image of ``n`` objects (``generic``: call it "shape")."""
        noun = GENERIC_NOUN if generic or (self.generic_extra and obj.shape in EXTRA_SHAPES) else obj.shape
        named = {"colour": obj.colour, "shape": noun}
        if n == 1 or self.pair_sizes:
            named["size"] = obj.size
        if n == 1:
            named["position"] = obj.position
        return named

    def _leave_out(self, rng: np.random.Generator, named: dict, obj: ShapeObject, n: int) -> dict:
        """``named`` with attributes dropped (or a pair's size added) as ``partial`` says."""
        if n == 1:
            drop = {key for key in ("size", "position") if rng.random() < self.partial}
            return {k: v for k, v in named.items() if k not in drop}
        if "size" not in named and rng.random() < self.partial:
            return {**named, "size": obj.size}
        return named


def _place_one(rng: np.random.Generator, side: float) -> tuple[float, float]:
    """Box centre for a lone object: a random grid cell's centre, jittered, the box kept inside the image."""
    cell = int(rng.integers(len(POSITIONS)))
    lo, hi = side / 2 + MARGIN, 1 - side / 2 - MARGIN
    centre = [(k + 0.5) / 3 + rng.uniform(-POSITION_JITTER, POSITION_JITTER) for k in (cell % 3, cell // 3)]
    return tuple(float(np.clip(v, lo, hi)) for v in centre)


def _place_two(rng: np.random.Generator, relation: str, sides: list[float]) -> list[tuple[float, float]]:
    """Box centres for objects A, B such that 'A <relation> B' holds in the pixels (see the module docstring)."""
    first, second = (0, 1) if relation in ("left of", "above") else (1, 0)  # `first` is left of / above `second`
    h = [s / 2 for s in sides]
    need = h[first] + h[second] + GAP
    lo_first, hi_second = h[first] + MARGIN, 1 - h[second] - MARGIN
    along = [0.0, 0.0]
    along[first] = rng.uniform(lo_first, hi_second - need)
    along[second] = rng.uniform(along[first] + need, hi_second)
    across = [0.0, 0.0]
    across[0] = rng.uniform(h[0] + MARGIN, 1 - h[0] - MARGIN)
    spread = 0.5 * (along[second] - along[first])
    across[1] = float(np.clip(across[0] + rng.uniform(-spread, spread), h[1] + MARGIN, 1 - h[1] - MARGIN))
    if relation in ("left of", "right of"):
        return [(along[k], across[k]) for k in (0, 1)]
    return [(across[k], along[k]) for k in (0, 1)]

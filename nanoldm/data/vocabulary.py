"""The shapes world's words: colours, shapes, sizes, positions, relations, class ids, and the caption grammar.

Caption grammar (lower case, single spaces; ``parse_caption`` inverts ``caption_for`` exactly)::

    caption  := object [" at the " POSITION]          one object:  "a small red circle at the top left"
              | object " " RELATION " " object         two objects: "a blue square left of a yellow triangle"
    object   := ARTICLE " " [SIZE " "] COLOUR " " NOUN
    ARTICLE  := "a" | "an"                             "an" before a vowel: "an orange star"
    SIZE     := small | large
    COLOUR   := red | green | blue | yellow | purple | orange
    NOUN     := circle | square | triangle | star | heart | shape     ("shape": any shape, not scored)
    POSITION := top left | top | top right | left | center | right | bottom left | bottom | bottom right
    RELATION := left of | right of | above | below

A position names the cell of a 3x3 grid that holds the object's box centre. The data set writes single-object
captions with size and position, and two-object captions without positions (sizes only when asked).

Class ids: ``class_id(colour, shape) = SHAPES.index(shape) * len(COLOURS) + COLOURS.index(colour)`` over all
five shapes, so the base shapes use 0..17 and star/heart 18..29 (``NUM_CLASSES = 30``). A single-object image's
class label is its object's class id; a two-object image has ``NO_CLASS`` (-1).
"""
from __future__ import annotations

from dataclasses import dataclass

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 90, 215),
    "yellow": (235, 205, 25),
    "purple": (140, 60, 180),
    "orange": (245, 125, 20),
}
BACKGROUND = (240, 240, 240)
# picture styles (never captioned): the background. "dark" and "paper" (a warm beige) are styles a base model's
# UNet never sees, for hypernetworks to learn
STYLES: dict[str, tuple[int, int, int]] = {"light": BACKGROUND, "dark": (28, 28, 36), "paper": (228, 212, 170)}
BASE_SHAPES = ("circle", "square", "triangle")
EXTRA_SHAPES = ("star", "heart")
SHAPES = BASE_SHAPES + EXTRA_SHAPES
GENERIC_NOUN = "shape"
SIZES: dict[str, float] = {"small": 0.22, "large": 0.38}  # box side as a fraction of the image side
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
RELATIONS = ("left of", "right of", "above", "below")
NUM_CLASSES = len(SHAPES) * len(COLOURS)
NO_CLASS = -1


def caption_words(shapes: tuple[str, ...] = BASE_SHAPES) -> frozenset[str]:
    """Every word a caption of ``shapes`` can contain (the grammar above): what a model trained on them knows."""
    phrases = ("a", "an", "at the", *SIZES, *COLOURS, *shapes, *POSITIONS, *RELATIONS)
    return frozenset(word for phrase in phrases for word in phrase.split())


def class_id(colour: str, shape: str) -> int:
    """Integer class of a (colour, shape) pair; see the module docstring for the table."""
    return SHAPES.index(shape) * len(COLOURS) + list(COLOURS).index(colour)


def class_name(cid: int) -> tuple[str, str]:
    """Inverse of ``class_id``: the (colour, shape) pair."""
    if not 0 <= cid < NUM_CLASSES:
        raise ValueError(f"class id must be in [0, {NUM_CLASSES}), got {cid}")
    return list(COLOURS)[cid % len(COLOURS)], SHAPES[cid // len(COLOURS)]


def position_of(cx: float, cy: float) -> str:
    """Name of the 3x3 grid cell holding the normalised point (cx, cy); y grows downwards."""
    col, row = (min(2, max(0, int(v * 3))) for v in (cx, cy))
    return POSITIONS[3 * row + col]


@dataclass(frozen=True)
class Prompt:
    """A parsed caption: per object a dict with "colour" and "shape" (a NOUN) and optionally "size" and
    "position"; ``relation`` relates objects[0] to objects[1] (None for one object)."""
    objects: tuple[dict, ...]
    relation: str | None = None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: dict) -> str:
    words = [w for w in (obj.get("size"), obj["colour"], obj["shape"]) if w]
    return f"{_article(words[0])} {' '.join(words)}"


def caption_for(objects, relation: str | None = None) -> str:
    """The caption naming ``objects`` (a Prompt, or dicts as in ``Prompt``): see the module docstring."""
    if isinstance(objects, Prompt):
        objects, relation = objects.objects, objects.relation
    objects = [_check_object(dict(o)) for o in objects]
    if len(objects) == 1 and relation is None:
        pos = objects[0].get("position")
        return _object_phrase(objects[0]) + (f" at the {pos}" if pos else "")
    if len(objects) != 2 or relation not in RELATIONS:
        raise ValueError(f"a caption names one object, or two objects and a relation {RELATIONS}; "
                         f"got {len(objects)} object(s) and relation {relation!r}")
    if any(o.get("position") for o in objects):
        raise ValueError("two-object captions do not name positions")
    return f"{_object_phrase(objects[0])} {relation} {_object_phrase(objects[1])}"


def _check_object(obj: dict) -> dict:
    for key, allowed in (("colour", COLOURS), ("shape", SHAPES + (GENERIC_NOUN,)), ("size", SIZES),
                         ("position", POSITIONS)):
        value = obj.get(key)
        if value is None and key in ("size", "position"):
            continue
        if value not in allowed:
            raise ValueError(f"unknown {key} {value!r} (known: {', '.join(allowed)})")
    return obj


def parse_caption(text: str) -> Prompt:
    """Read a caption of the grammar above back into a Prompt; ValueError naming the problem otherwise.
    Case, surrounding spaces, repeated spaces and a final full stop are forgiven."""
    clean = " ".join(text.lower().strip().rstrip(".").split())
    for relation in RELATIONS:
        left, sep, right = clean.partition(f" {relation} ")
        if sep and right.split(" ", 1)[0] in ("a", "an"):
            return Prompt((_parse_object(left, text), _parse_object(right, text)), relation)
    phrase, sep, position = clean.partition(" at the ")
    obj = _parse_object(phrase, text)
    if sep:
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r} in {text!r} (known: {', '.join(POSITIONS)})")
        obj["position"] = position
    return Prompt((obj,))


def _parse_object(phrase: str, text: str) -> dict:
    words = phrase.split()
    if not words or words[0] not in ("a", "an"):
        raise ValueError(f"expected 'a' or 'an' to start the object {phrase!r} in {text!r}")
    words = words[1:]
    obj = {}
    if words and words[0] in SIZES:
        obj["size"] = words.pop(0)
    if len(words) != 2:
        raise ValueError(f"expected '[size] colour shape' after the article in {phrase!r} of {text!r}")
    obj["colour"], obj["shape"] = words
    try:
        return _check_object(obj)
    except ValueError as e:
        raise ValueError(f"{e} in {text!r}") from None


def parse_combinations(text: str) -> frozenset[tuple[str, str]]:
    """``"green triangle, red circle"`` -> {("green", "triangle"), ("red", "circle")}: combinations to hold out."""
    combos = set()
    for item in filter(None, (s.strip().lower() for s in text.split(","))):
        words = item.split()
        if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise ValueError(f"cannot read held-out combination {item!r}: expected 'colour shape' with a colour "
                             f"in {', '.join(COLOURS)} and a shape in {', '.join(SHAPES)}")
        combos.add((words[0], words[1]))
    return frozenset(combos)


def parse_names(text: str) -> tuple[str, ...]:
    """``"star, heart"`` -> ("star", "heart"); ``""`` -> (): a comma-separated list from the command line."""
    return tuple(s.strip() for s in text.split(",") if s.strip())

"""A1111's prompt syntax: attention weights, BREAK, and extra-network tags.

Weights (stable-diffusion-webui's "emphasis"):
    (words)       weight x 1.1          [words]      weight / 1.1
    (words:1.3)   weight x 1.3          nesting multiplies: ((words)) is x 1.21
    \\( \\) \\[ \\] \\\\   the literal characters ( ) [ ] \\ ; any other backslash is dropped
Brackets left open at the end still apply from where they opened; a closing bracket with nothing open is
plain text. Neighbouring pieces of equal weight are merged. "BREAK" (upper case, a word of its own) becomes
the marker ``("BREAK", -1.0)``, which ends the current 75-token chunk (see `nanoldm.text.encode`).

Extra networks: ``<kind:name:arg...>`` tags, e.g. ``<hypernet:anime:0.8>`` or ``<lora:style:0.6>``, are
taken out of the prompt before it is encoded (`extract_extra_networks`).

Prompt editing (``[from:to:when]``), alternation (``[a|b]``) and ``AND`` are not part of this module.
"""
from __future__ import annotations

import re

__all__ = ["BREAK", "parse_prompt_attention", "extract_extra_networks"]

BREAK = ("BREAK", -1.0)
"""The piece `parse_prompt_attention` yields for the word BREAK: start a new chunk here."""

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One syntax element per match, tried in this order.
_ELEMENT = re.compile(r"""
      \\(?P<escaped>[()\[\]\\]?)                  # \( \) \[ \] \\ ; a lone backslash escapes nothing
    | (?P<open>[(\[])
    | :(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\)     # ":1.3)" closes a round bracket with that weight
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
""", re.VERBOSE)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) pieces, as A1111's parser does.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_attention("a [dim] (bright:1.5) BREAK sky")
    [('a ', 1.0), ('dim', 0.9090909090909091), (' ', 1.0), ('bright', 1.5), ('', 1.0), ('BREAK', -1.0), ('sky', 1.0)]

    One difference: A1111 accepts any run of digits and dots as a weight and fails on one that is not a
    number ("(a:1.2.3)"); here such a run is not a weight, so it stays text.
    """
    pieces: list[list] = []  # [text, weight], mutable while brackets close
    open_round: list[int] = []  # index of the first piece inside each open bracket
    open_square: list[int] = []

    def scale_from(start: int, multiplier: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= multiplier

    for m in _ELEMENT.finditer(text):
        if m["escaped"] is not None:
            pieces.append([m["escaped"], 1.0])
        elif m["open"] is not None:
            (open_round if m["open"] == "(" else open_square).append(len(pieces))
        elif m["weight"] is not None and open_round:
            scale_from(open_round.pop(), float(m["weight"]))
        elif m["close"] == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif m["close"] == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:  # plain text, or a bracket / weight with nothing open to close
            pieces.extend(_split_breaks(m[0]))
    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)
    return _merge_equal_weights(pieces or [["", 1.0]])


def _split_breaks(text: str) -> list[list]:
    """Plain text -> its parts between BREAK words, with a BREAK marker between each two."""
    pieces: list[list] = []
    for i, part in enumerate(_BREAK_WORD.split(text)):
        if i:
            pieces.append(list(BREAK))
        pieces.append([part, 1.0])
    return pieces


def _merge_equal_weights(pieces: list[list]) -> list[tuple[str, float]]:
    """Join each run of neighbouring pieces with exactly equal weights."""
    merged: list[list] = [list(pieces[0])]
    for text, weight in pieces[1:]:
        if weight == merged[-1][1]:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, weight) for text, weight in merged]


def extract_extra_networks(text: str) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]]:
    """Remove ``<kind:name:arg...>`` tags from a prompt; return the rest and (kind, name, args) per tag.

    Arguments are the colon-separated strings after the name, unparsed (A1111's hypernetworks and LoRAs
    read the first as a strength, default 1.0).

    >>> extract_extra_networks("a cat <hypernet:anime:0.8>, <lora:ink:0.5:te=1>")
    ('a cat , ', [('hypernet', 'anime', ('0.8',)), ('lora', 'ink', ('0.5', 'te=1'))])
    """
    found: list[tuple[str, str, tuple[str, ...]]] = []

    def take(m: re.Match) -> str:
        name, *args = m[2].split(":")
        found.append((m[1], name, tuple(args)))
        return ""

    return _EXTRA_NETWORK.sub(take, text), found

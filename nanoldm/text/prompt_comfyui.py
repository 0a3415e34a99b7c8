"""ComfyUI's prompt syntax and chunking (``comfy/sd1_clip.py``: ``token_weights``, ``tokenize_with_weights``), for
``like="comfyui"``. Where it differs from A1111's (``nanoldm.text.prompt``, ``nanoldm.text.encode``):

    (words)        weight x 1.1, nesting multiplies: ((words)) is x 1.21            (as A1111)
    (words:1.3)    weight 1.3: an explicit weight REPLACES the outer ones           A1111 multiplies them
    (a:b)          not a number: x 1.1 and the text keeps "a:b"                      A1111: plain text, x 1.1
    [words]        plain text, brackets included                                   A1111: weight / 1.1
    \\( \\)          literal brackets; every other backslash stays                    A1111 also \\[ \\] \\\\
    ( left open    plain text from there on, bracket included                      A1111: x 1.1 to the end
    BREAK          a word like any other                                           A1111: a new chunk

Chunking: every weighted piece is one group of tokens. A group that does not fit in the 75 tokens left moves
whole to the next chunk when it is shorter than 8 tokens; a longer one is split where the chunk is full
(A1111 instead backs up to the last comma).
"""
from __future__ import annotations

from nanoldm.text.tokenizer import CLIPTokenizer

ROUND_MULTIPLIER = 1.1
MAX_WORD_LENGTH = 8  # ComfyUI's max_word_length: shorter groups are kept in one chunk
_ESCAPES = (("\\)", "\0\1"), ("\\(", "\0\2"))  # ComfyUI's escape_important: hidden from the bracket parser


def parse_comfyui_weights(text: str) -> list[tuple[str, float]]:
    """A prompt -> its (text, weight) pieces, in order, as ComfyUI's ``token_weights`` gives them.

    >>> parse_comfyui_weights("a (red (circle:1.5)) [x]")
    [('a ', 1.0), ('red ', 1.1), ('circle', 1.5), (' [x]', 1.0)]
    """
    for plain, hidden in _ESCAPES:
        text = text.replace(plain, hidden)
    pieces = []
    for piece, weight in _weigh(text, 1.0):
        for plain, hidden in _ESCAPES:
            piece = piece.replace(hidden, plain[1])
        pieces.append((piece, weight))
    return pieces


def _weigh(text: str, weight: float) -> list[tuple[str, float]]:
    out = []
    for group in _top_level_groups(text):
        if len(group) < 2 or group[0] != "(" or group[-1] != ")":
            out.append((group, weight))
            continue
        inner, inner_weight = group[1:-1], weight * ROUND_MULTIPLIER
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner, inner_weight = inner[:colon], float(inner[colon + 1:])
            except ValueError:
                pass
        out.extend(_weigh(inner, inner_weight))
    return out


def _top_level_groups(text: str) -> list[str]:
    """Split at the outermost brackets: plain runs and whole "(...)" groups (ComfyUI's ``parse_parentheses``;
    a bracket left open makes the rest one plain run, a stray ")" stays inside the run it ends)."""
    groups, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                groups.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                groups.append(current + char)
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        groups.append(current)
    return groups


def comfyui_token_groups(tokenizer: CLIPTokenizer, prompt: str) -> list[list[tuple[int, float]]]:
    """Each weighted piece's (token id, weight) list; pieces without tokens are left out."""
    groups = [[(t, w) for t in tokenizer.encode(piece)] for piece, w in parse_comfyui_weights(prompt)]
    return [g for g in groups if g]


def comfyui_chunks(tokenizer: CLIPTokenizer, prompt: str, chunk_tokens: int) -> list[tuple[list[int], list[float]]]:
    """``tokenize_with_weights``: the prompt's chunks as (ids, weights), each BOS + ``chunk_tokens`` + EOS long,
    then padded (SD 1.x pads with the end token)."""
    size = chunk_tokens + 2
    chunks, current = [], [(tokenizer.bos_id, 1.0)]

    def close() -> None:
        current.append((tokenizer.eos_id, 1.0))
        current.extend([(tokenizer.pad_id, 1.0)] * (size - len(current)))
        chunks.append(current)

    for group in comfyui_token_groups(tokenizer, prompt):
        large = len(group) >= MAX_WORD_LENGTH
        while group:
            room = size - 1 - len(current)
            if len(group) <= room:
                current.extend(group)
                break
            if large:  # split the piece where the chunk is full
                current.extend(group[:room])
                group = group[room:]
            close()
            current = [(tokenizer.bos_id, 1.0)]
    close()
    return [([t for t, _ in chunk], [w for _, w in chunk]) for chunk in chunks]

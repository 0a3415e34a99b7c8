"""ComfyUI's prompt syntax and chunking (``comfy/sd1_clip.py``: ``token_weights``, ``tokenize_with_weights``), for
``like="comfyui"``. Where it differs from A1111's (``nanoldm.text.prompt``, ``nanoldm.text.encode``):

    (words)        weight x 1.1, nesting multiplies: ((words)) is x 1.21            (as A1111)
    (words:1.3)    weight 1.3: an explicit weight REPLACES the outer ones           A1111 multiplies them
    (a:b)          not a number: x 1.1 and the text keeps "a:b"                      A1111: plain text, x 1.1
    [words]        plain text, brackets included                                   A1111: weight / 1.1
    \\( \\)          literal brackets; every other backslash stays                    A1111 also \\[ \\] \\\\
    ( left open    plain text from there on, bracket included                      A1111: x 1.1 to the end
    BREAK          a word like any other                                           A1111: a new chunk
    embedding:name a textual-inversion embedding, its own token group              A1111: the bare name
    name           plain text, even when an embedding has that name                A1111: the embedding

Chunking: every weighted piece is one group of tokens. A group that does not fit in the 75 tokens left moves
whole to the next chunk when it is shorter than 8 tokens; a longer one is split where the chunk is full
(A1111 instead backs up to the last comma).
"""
from __future__ import annotations

import re
import warnings

from nanoldm.text.tokenizer import CLIPTokenizer

ROUND_MULTIPLIER = 1.1
MAX_WORD_LENGTH = 8  # ComfyUI's max_word_length: shorter groups are kept in one chunk
EMBEDDING = "embedding:"  # ComfyUI's embedding_identifier
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
_EMBEDDING_SPLIT = re.compile(" embedding:|\nembedding:")
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
    """Each weighted piece's (token id, weight) list, an ``embedding:name`` its own group; empty ones left out."""
    groups = []
    for piece, weight in parse_comfyui_weights(prompt):
        for words in _embedding_words(tokenizer, piece):
            groups.append([(t, weight) for t in words])
    return [g for g in groups if g]


def _embedding_words(tokenizer: CLIPTokenizer, piece: str) -> list[list[int]]:
    """``tokenize_with_weights``' split of a piece at " embedding:" (or a newline before it): the text before,
    then per embedding its vectors' ids and the text after its name (a trailing comma is not part of the name).
    A name no embedding has is dropped with a warning, as ComfyUI drops it. Other text is plain: an embedding's
    bare name is an ordinary word here."""
    parts = _EMBEDDING_SPLIT.split(piece)
    out = []
    for i, word in enumerate(parts):
        if i or word.startswith(EMBEDDING):
            text = word[len(EMBEDDING):] if not i else word
            ids, word = _embedding(tokenizer, text.strip("\n"))
            out.append(ids)
        if word:
            out.append(tokenizer.encode(word, added=False))
    return out


def _embedding(tokenizer: CLIPTokenizer, text: str) -> tuple[list[int], str]:
    """(the named embedding's token ids, or [] with a warning; the text left after the name)."""
    words = text.split()
    name, rest = (words[0], " ".join(words[1:])) if words else ("", "")
    ids = _embedding_ids(tokenizer, name)
    if not ids and name.strip(",") != name:
        stripped = name.strip(",")
        ids, rest = _embedding_ids(tokenizer, stripped), f"{name[len(stripped):]} {rest}"
    if not ids:
        warnings.warn(f"embedding:{text} does not exist, ignoring (loaded embeddings: "
                      f"{', '.join(tokenizer.added_tokens) or 'none'})", stacklevel=4)
    return ids, rest


def _embedding_ids(tokenizer: CLIPTokenizer, name: str) -> list[int]:
    """An embedding's ids by its file name, with or without ComfyUI's extensions."""
    for candidate in [name] + [name[:-len(ext)] for ext in EMBEDDING_EXTENSIONS if name.endswith(ext)]:
        if tokens := tokenizer.vector_tokens(candidate):
            return [tokenizer.token_to_id(t) for t in tokens]
    return []


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

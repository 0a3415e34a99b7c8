"""CLIP's byte-level byte-pair encoding (Radford et al. 2021, "Learning Transferable
Visual Models From Natural Language Supervision", after GPT-2's byte-level BPE).

A word (a run of letters, one digit, or a run of punctuation) is turned into its
UTF-8 bytes, each byte is shown as one printable unicode character, and the last
character carries the end-of-word marker `</w>`. Merges are then applied lowest
rank first until no ranked pair is left; each resulting symbol is one token id.

The vocabulary comes from one of two files:
- CLIP's `bpe_simple_vocab_16e6.txt.gz`: a header line, then merges "a b", one a
  line. CLIP keeps the first 48,894 and builds the vocabulary from them:
  256 byte characters (in code-point order), the same with `</w>`, each merge joined, then
  `<|startoftext|>` and `<|endoftext|>` (49,408 entries).
- a diffusers `tokenizer/` folder: `vocab.json` (token -> id) and `merges.txt`
  (an optional `#version` header, then the merges in rank order).
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
CLIP_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the gz file
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_NUM_MERGES + 2  # 49408
_CACHE_LIMIT = 100_000  # words; the cache is emptied when it grows past this


class TokenizerError(ValueError):
    """A bad tokenizer file or a bad prompt; the message names the problem and the path."""


def bytes_to_unicode() -> dict[int, str]:
    """Map each byte 0..255 to one printable unicode character.

    Bytes that already print as themselves (`!`..`~`, `¡`..`¬`, `®`..`ÿ`) keep their
    character; the other 68 bytes get U+0100, U+0101, ... in byte order. BPE then
    works on strings with no whitespace or control characters in them.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE = bytes_to_unicode()
UNICODE_TO_BYTE = {char: byte for byte, char in BYTE_TO_UNICODE.items()}
# str.translate table: latin-1 code point (= the byte) -> its BPE character.
_BYTE_TRANSLATION = str.maketrans({chr(b): c for b, c in BYTE_TO_UNICODE.items()})


def _parse_merges(lines: list[str], path: Path, first_line: int) -> list[tuple[str, str]]:
    """Split "a b" lines into pairs; `first_line` is the 1-based number of lines[0]."""
    merges = []
    for number, line in enumerate(lines, start=first_line):
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerError(f"{path}: line {number} is not a merge 'a b': {line[:40]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def read_bpe_gz(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read CLIP's `bpe_simple_vocab_16e6.txt.gz`; returns (vocab, merges) built as CLIP does."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise TokenizerError(f"{path}: BPE vocabulary file not found") from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not a readable gzip of UTF-8 BPE merges ({e})") from None
    if len(lines) < CLIP_NUM_MERGES + 1:
        raise TokenizerError(f"{path}: holds {len(lines) - 1} merges, CLIP needs {CLIP_NUM_MERGES}")
    merges = _parse_merges(lines[1 : CLIP_NUM_MERGES + 1], path, first_line=2)
    chars = sorted(BYTE_TO_UNICODE.values())  # code-point order: printable bytes, then U+0100...
    tokens = chars + [c + END_OF_WORD for c in chars] + [a + b for a, b in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, merges


def read_vocab_json(path: str | Path) -> dict[str, int]:
    """Read a `vocab.json` (token -> id) and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: vocab.json not found")
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: corrupt vocab.json, not valid JSON ({e})") from None
    if not isinstance(vocab, dict) or not all(type(i) is int and i >= 0 for i in vocab.values()):
        raise TokenizerError(f"{path}: corrupt vocab.json, expected an object of token -> id >= 0")
    if len(set(vocab.values())) != len(vocab):
        raise TokenizerError(f"{path}: corrupt vocab.json, two tokens share an id")
    return vocab


def read_merges_txt(path: str | Path) -> list[tuple[str, str]]:
    """Read a `merges.txt`: an optional `#version` line, then "a b" per line in rank order."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{path}: merges.txt not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise TokenizerError(f"{path}: corrupt merges.txt, not UTF-8 ({e})") from None
    start = 1 if lines[0].startswith("#version") else 0  # merges may start with "#" too
    while lines and not lines[-1]:
        lines.pop()
    return _parse_merges(lines[start:], path, first_line=start + 1)


def read_tokenizer_json(path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int]]:
    """Read the BPE model of a `tokenizers` `tokenizer.json` (what transformers 5 saves): vocab, merges
    (written "a b" or ["a", "b"]) and added tokens (token -> id)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        if model.get("type") != "BPE":
            raise ValueError(f"model type {model.get('type')!r}, expected BPE")
        vocab, merges = dict(model["vocab"]), model["merges"]
        added = {str(t["content"]): int(t["id"]) for t in data.get("added_tokens") or []}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise TokenizerError(f"{path}: corrupt tokenizer.json ({type(e).__name__}: {e})") from None
    lines = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return vocab, _parse_merges(lines, path, first_line=1), added


def check_vocabulary(vocab: dict[str, int], merges: list[tuple[str, str]], source: str | Path) -> None:
    """Raise TokenizerError unless every merge's parts and result are vocabulary tokens."""
    for rank, (a, b) in enumerate(merges):
        for token in (a, b, a + b):
            if token not in vocab:
                raise TokenizerError(f"{source}: merge {rank} ({a} {b}) uses {token!r}, which is not in the vocabulary")
    for token in (BOS_TOKEN, EOS_TOKEN):
        if token not in vocab:
            raise TokenizerError(f"{source}: vocabulary has no {token}")


class BytePairEncoder:
    """Words -> token ids by CLIP's byte-level BPE, with a per-word cache.

    `vocab` maps token strings to ids; `merges` lists symbol pairs, best (rank 0) first.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.vocab = vocab
        self.merges = merges
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.id_to_token = {i: token for token, i in vocab.items()}
        self._cache: dict[str, tuple[int, ...]] = {}

    def encode_word(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized word (raw text, no whitespace), cached."""
        ids = self._cache.get(word)
        if ids is None:
            chars = word.encode("utf-8").decode("latin-1").translate(_BYTE_TRANSLATION)
            symbols = self.merge([*chars[:-1], chars[-1] + END_OF_WORD])
            ids = tuple(self.vocab[s] for s in symbols)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def merge(self, symbols: list[str]) -> list[str]:
        """Apply merges to a symbol list: repeatedly join every occurrence of the best-ranked pair."""
        ranks = self.ranks
        while len(symbols) > 1:
            best, best_rank = None, len(ranks)
            for pair in zip(symbols, symbols[1:]):
                rank = ranks.get(pair, best_rank)
                if rank < best_rank:
                    best, best_rank = pair, rank
            if best is None:
                break
            first, second = best
            merged, i, n = [], 0, len(symbols)
            while i < n:
                if i < n - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def token_bytes(self, token: str) -> bytes:
        """Bytes a token stands for; a token with characters outside the byte table (an added
        word such as "my word") stands for its own UTF-8."""
        try:
            return bytes(UNICODE_TO_BYTE[c] for c in token)
        except KeyError:
            return token.encode("utf-8")

"""CLIP's text tokenizer (Radford et al. 2021), as Stable Diffusion 1.x uses it.

Prompt -> ids in four steps, the same as `transformers.CLIPTokenizer` 5.x (built on the
`tokenizers` library, which never uses ftfy). Original CLIP also runs ftfy and unescapes
HTML ("&amp;" -> "&"); transformers 4's Python tokenizer without ftfy also dropped
control characters and split CJK characters apart. On plain ASCII prompts all agree.
1. clean: Unicode NFC, every whitespace run -> one space, lower-case each character;
2. split out added tokens (`<|startoftext|>`, `<|endoftext|>`, textual-inversion words); an added token
   `T` followed by added tokens `T_1`, `T_2`, ... (a multi-vector embedding, as diffusers names them)
   expands to all their ids, in order;
3. cut the rest into words: `'s 't 're 've 'm 'll 'd`, letter runs, single digits,
   runs of other non-space characters; whitespace is dropped;
4. byte-level BPE each word (`nanoldm.text.bpe`).
The batch form wraps ids as [BOS, ids..., EOS] and pads with EOS to 77, as SD 1.x does.
"""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import regex
import torch

from nanoldm.text.bpe import (
    BOS_TOKEN,
    END_OF_WORD,
    EOS_TOKEN,
    BytePairEncoder,
    TokenizerError,
    check_vocabulary,
    read_bpe_gz,
    read_merges_txt,
    read_tokenizer_json,
    read_vocab_json,
)

__all__ = ["CLIPTokenizer", "TokenizerError", "clean_text"]

BPE_GZ_NAME = "bpe_simple_vocab_16e6.txt.gz"
_WORDS = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+""")
_WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """Step 1: NFC, whitespace runs -> " ", then lower-case character by character.

    Per character (not `str.lower`) so that a word-final "Σ" becomes "σ", as in the
    `tokenizers` library; Python's `str.lower` would give "ς".
    """
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    if "Σ" in text:
        return "".join(c.lower() for c in text)
    return text.lower()


def find_bpe_gz() -> Path:
    """Path of CLIP's `bpe_simple_vocab_16e6.txt.gz` inside an installed `open_clip` or `clip`."""
    for package in ("open_clip", "clip"):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = Path(folder) / BPE_GZ_NAME
            if path.is_file():
                return path
    raise TokenizerError(
        f"no {BPE_GZ_NAME} found in an installed open_clip or clip package; "
        "`pip install --no-deps open_clip_torch`, or pass the file's path, or load a diffusers tokenizer/ folder"
    )


class CLIPTokenizer:
    """CLIP BPE tokenizer: `encode`/`decode` single prompts, `__call__` for padded batches.

    `vocab_size` counts added tokens too: it is the size of the embedding table the
    text encoder needs.
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], *, source: str | Path = "vocabulary"):
        check_vocabulary(vocab, merges, source)
        self._bpe = BytePairEncoder(vocab, merges)
        self._base_size = max(vocab.values()) + 1
        self._added: dict[str, int] = {}  # user-added token as written -> id
        self.model_max_length = 77
        self._build_splitter()

    # ---- loading ----

    @classmethod
    def from_folder(cls, path: str | Path) -> CLIPTokenizer:
        """Load a diffusers/transformers `tokenizer/` folder (vocab.json, merges.txt, added tokens)."""
        path = Path(path)
        if not path.is_dir():
            raise TokenizerError(f"{path}: tokenizer folder not found")
        if (path / "merges.txt").is_file():
            if not (path / "vocab.json").is_file():
                raise TokenizerError(f"{path}: tokenizer folder has no vocab.json")
            vocab, merges = read_vocab_json(path / "vocab.json"), read_merges_txt(path / "merges.txt")
            added = _read_added_tokens(path)
        elif (path / "tokenizer.json").is_file():  # transformers 5 saves only this
            vocab, merges, added = read_tokenizer_json(path / "tokenizer.json")
        else:
            raise TokenizerError(f"{path}: tokenizer folder has no merges.txt (nor a tokenizer.json)")
        tokenizer = cls(vocab, merges, source=path)
        for token, token_id in sorted(added.items(), key=lambda item: item[1]):
            if tokenizer.token_to_id(token) is None:
                tokenizer._add_one(token, token_id, path)
        return tokenizer

    @classmethod
    def from_bpe_file(cls, path: str | Path | None = None) -> CLIPTokenizer:
        """Load CLIP's `bpe_simple_vocab_16e6.txt.gz`; None: the copy in an installed open_clip/clip."""
        path = find_bpe_gz() if path is None else Path(path)
        vocab, merges = read_bpe_gz(path)
        return cls(vocab, merges, source=path)

    @classmethod
    def default(cls) -> CLIPTokenizer:
        """The SD 1.x tokenizer, from the installed BPE file."""
        return cls.from_bpe_file()

    # ---- vocabulary ----

    @property
    def bos_id(self) -> int:
        return self._bpe.vocab[BOS_TOKEN]

    @property
    def eos_id(self) -> int:
        return self._bpe.vocab[EOS_TOKEN]

    @property
    def pad_id(self) -> int:
        """SD 1.x pads with the end-of-text id."""
        return self.eos_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (49408 for SD 1.x before any are added)."""
        return self._base_size + len(self._added)

    @property
    def added_tokens(self) -> list[str]:
        """Tokens added with ``add_tokens`` (or read from a folder), in id order."""
        return sorted(self._added, key=self._added.get)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary or added token, or None."""
        found = self._bpe.vocab.get(token)
        return self._added.get(token) if found is None else found

    def add_tokens(self, tokens: list[str]) -> list[int]:
        """Add whole-word tokens (textual inversion); returns their new ids, in order.

        Each is matched in prompts after clean-up (so "<Star>" also matches "<STAR>")
        and encodes to its id (then those of `vector_tokens`, for a multi-vector embedding).
        """
        if isinstance(tokens, str):
            tokens = [tokens]
        first, before = self.vocab_size, dict(self._added)
        try:
            for i, token in enumerate(tokens):
                self._add_one(token, first + i, "add_tokens")
        except TokenizerError:
            self._added = before  # all or nothing
            self._build_splitter()
            raise
        return list(range(first, first + len(tokens)))

    def vector_tokens(self, token: str) -> list[str]:
        """The added tokens a prompt's `token` stands for: itself, then `token_1`, `token_2`, ... while those
        are added too (a multi-vector textual-inversion embedding); [] if `token` is not an added token."""
        if token not in self._added:
            return []
        names = [token]
        while f"{token}_{len(names)}" in self._added:
            names.append(f"{token}_{len(names)}")
        return names

    def remove_tokens(self, tokens: list[str]) -> list[int]:
        """Remove added tokens; those added after them move down so ids stay contiguous. Returns the removed
        tokens' former ids, ascending (the rows to drop from the text encoder's embedding table)."""
        gone = set([tokens] if isinstance(tokens, str) else tokens)
        unknown = sorted(t for t in gone if t not in self._added)
        if unknown:
            raise TokenizerError(f"remove_tokens: {unknown[0]!r} is not an added token")
        removed = sorted(self._added[t] for t in gone)
        kept = [t for t in self.added_tokens if t not in gone]
        self._added = {t: self._base_size + i for i, t in enumerate(kept)}
        self._build_splitter()
        return removed

    def _add_one(self, token: str, token_id: int, source: str | Path) -> None:
        """Register one added token as the next id; `source` names the caller or file in errors."""
        if not isinstance(token, str) or not clean_text(token).strip():
            raise TokenizerError(f"{source}: cannot add {token!r}: tokens must be non-blank strings")
        if self.token_to_id(token) is not None:
            raise TokenizerError(f"{source}: cannot add {token!r}: already in the vocabulary")
        if clean_text(token) in self._splits:
            raise TokenizerError(f"{source}: cannot add {token!r}: it matches the same text as an added token")
        if token_id != self.vocab_size:
            raise TokenizerError(f"{source}: added token {token!r} has id {token_id}, expected {self.vocab_size}")
        self._added[token] = token_id
        self._build_splitter()

    def _build_splitter(self) -> None:
        """Regex that finds added tokens in cleaned text, longest first at each position."""
        self._splits = {clean_text(t): [self._bpe.vocab[t]] for t in (BOS_TOKEN, EOS_TOKEN)}
        self._splits.update({clean_text(t): [self._added[v] for v in self.vector_tokens(t)] for t in self._added})
        alternatives = "|".join(regex.escape(t) for t in sorted(self._splits, key=len, reverse=True))
        self._splitter = regex.compile(f"({alternatives})")
        specials = sorted((clean_text(t) for t in (BOS_TOKEN, EOS_TOKEN)), key=len, reverse=True)
        self._special_splitter = regex.compile(f"({'|'.join(regex.escape(t) for t in specials)})")

    # ---- encoding ----

    def encode(self, text: str, *, added: bool = True) -> list[int]:
        """Token ids of one prompt, without BOS/EOS. ``added=False``: added tokens are not looked for, their
        words are plain text (ComfyUI calls embeddings only as ``embedding:name``); the start and end tokens
        written out are still those tokens."""
        if not isinstance(text, str):
            raise TokenizerError(f"prompt must be a str, got {type(text).__name__}")
        ids: list[int] = []
        splitter = self._splitter if added else self._special_splitter
        pieces = splitter.split(clean_text(text))  # text, token, text, token, ..., text
        for i, piece in enumerate(pieces):
            if i % 2:
                ids.extend(self._splits[piece])
            else:
                for word in _WORDS.findall(piece):
                    ids.extend(self._bpe.encode_word(word))
        return ids

    def __call__(self, texts: str | list[str], *, max_length: int = 77, truncate: bool = True) -> torch.LongTensor:
        """Batch of prompts -> (B, max_length) ids: BOS, ids, EOS, then EOS padding.

        Prompts longer than max_length - 2 tokens are cut when `truncate`, else rejected.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_length < 2:
            raise TokenizerError(f"max_length must be at least 2 (BOS and EOS), got {max_length}")
        limit = max_length - 2
        rows = []
        for n, text in enumerate(texts):
            ids = self.encode(text)
            if len(ids) > limit and not truncate:
                raise TokenizerError(f"prompt {n} is {len(ids)} tokens, limit {limit} (max_length {max_length})")
            ids = [self.bos_id, *ids[:limit], self.eos_id]
            rows.append(ids + [self.pad_id] * (max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), max_length)  # (B, max_length)

    def decode(self, ids: list[int] | torch.Tensor, *, skip_special: bool = True) -> str:
        """Text of token ids, lower-cased; BOS/EOS dropped when `skip_special`.

        As transformers: token bytes are concatenated, each `</w>` becomes a space, and
        the ends are stripped, so an added token is glued to the word after it.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        names = {**self._bpe.id_to_token, **{i: t for t, i in self._added.items()}}
        specials = {self.bos_id, self.eos_id}
        pieces = []
        for i in ids:
            if i not in names:
                raise TokenizerError(f"decode: id {i} is not in the vocabulary (size {self.vocab_size})")
            if not (skip_special and i in specials):
                pieces.append(self._bpe.token_bytes(names[i]))
        return b"".join(pieces).decode("utf-8", errors="replace").replace(END_OF_WORD, " ").strip()

    def words(self, ids: list[int]) -> list[tuple[str, list[int]]]:
        """Prompt ids (no BOS/EOS) grouped back into words: (the word's text, the positions of its BPE pieces
        in ``ids``). A word ends at a piece that ends in ``</w>``; an added token is a word of its own."""
        names, added = {**self._bpe.id_to_token, **{i: t for t, i in self._added.items()}}, set(self._added.values())
        words: list[tuple[str, list[int]]] = []
        open_word: list[int] = []
        for position, i in enumerate(ids):
            if i in added and open_word:  # an added token ends the word before it
                words.append((self.decode([ids[p] for p in open_word]), open_word))
                open_word = []
            open_word.append(position)
            if names.get(i, "").endswith(END_OF_WORD) or i in added:
                words.append((self.decode([ids[p] for p in open_word]), open_word))
                open_word = []
        if open_word:
            words.append((self.decode([ids[p] for p in open_word]), open_word))
        return words

    # ---- saving ----

    def save_folder(self, path: str | Path) -> None:
        """Write a diffusers `tokenizer/` folder that `transformers.CLIPTokenizer` loads to the same ids."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        vocab = dict(sorted(self._bpe.vocab.items(), key=lambda item: item[1]))
        (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges = "".join(f"{a} {b}\n" for a, b in self._bpe.merges)
        (path / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
        special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
        _write_json(path / "special_tokens_map.json", special)
        config = {
            "tokenizer_class": "CLIPTokenizer",
            "model_max_length": self.model_max_length,
            "do_lower_case": True,
            "errors": "replace",
            "add_prefix_space": False,
            **special,
            "added_tokens_decoder": _added_tokens_decoder(self._bpe.vocab, self._added),
        }
        _write_json(path / "tokenizer_config.json", config)
        if self._added:
            _write_json(path / "added_tokens.json", self._added)


def _added_tokens_decoder(vocab: dict[str, int], added: dict[str, int]) -> dict[str, dict]:
    """transformers' `added_tokens_decoder`: id -> token description, special tokens first."""
    entries = [(vocab[t], t, True) for t in (BOS_TOKEN, EOS_TOKEN)] + [(i, t, False) for t, i in added.items()]
    return {
        str(i): {"content": t, "lstrip": False, "rstrip": False, "normalized": True, "single_word": False, "special": s}
        for i, t, s in entries
    }


def _read_added_tokens(path: Path) -> dict[str, int]:
    """Added tokens of a folder: `added_tokens.json` and `tokenizer_config.json`'s `added_tokens_decoder`."""
    added: dict[str, int] = {}
    for name in ("added_tokens.json", "tokenizer_config.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if name == "tokenizer_config.json":
                data = {v["content"]: int(k) for k, v in data.get("added_tokens_decoder", {}).items()}
            added.update({str(t): int(i) for t, i in data.items()})
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
            raise TokenizerError(f"{file}: corrupt {name} ({type(e).__name__}: {e})") from None
    return added


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

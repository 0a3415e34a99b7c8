"""Textual inversion (Gal et al. 2022): a new word whose embedding vectors were learned, added to a model.

Applying an embedding of N vectors under the token T (``apply_embedding``):
1. the tokenizer gains the added tokens T, T_1, ..., T_{N-1} (diffusers' names); a prompt's T encodes to all
   N ids (``CLIPTokenizer.vector_tokens``), so every prompt path sees them: generation, long-prompt chunks
   (:mod:`nanoldm.text.encode`), the latent cache;
2. the text encoder's token-embedding table grows by N rows holding the vectors, and ``config.text.vocab_size``
   with it, so the model saves and loads back with its tokens (our checkpoint lists them under
   ``nanoldm_added_tokens``; a diffusers folder in ``tokenizer/``).
Loading a token again replaces it: its rows are rewritten in place when N is unchanged; otherwise its old
tokens and rows are removed (later added tokens move down) and the new ones appended.

Files (:mod:`nanoldm.finetune.embedding_files`): ``load_textual_inversion`` reads one file, its token the name
stored in it unless given; ``load_embeddings_dir`` reads an A1111 embeddings folder, where every ``.pt``,
``.safetensors`` and ``.bin`` file (subfolders included) is a token named after its file stem, as A1111 does
(except that ``star.pt`` holding the name ``<star>`` defines ``<star>``: see ``folder_token``).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.hashing import hash_list, sha256_file
from nanoldm.finetune.embedding_files import (EMBEDDING_SUFFIXES, Embedding, file_name, read_embedding,
                                              read_png_embedding)
from nanoldm.model import LatentDiffusion
from nanoldm.text.bpe import TokenizerError

__all__ = ["apply_embedding", "embedding_vectors", "load_textual_inversion", "load_embeddings", "load_embeddings_dir",
           "token_embedding", "vector_token_names"]


def token_embedding(text_encoder: nn.Module) -> nn.Embedding:
    """The text encoder's token-embedding table: (vocab_size, width) weights."""
    table = text_encoder.embeddings.token_embedding
    if not isinstance(table, nn.Embedding):
        raise TypeError(f"the text encoder's token embedding is a {type(table).__name__} (being trained?), "
                        f"not an nn.Embedding")
    return table


def vector_token_names(token: str, n: int) -> list[str]:
    """The added tokens of an n-vector embedding: token, token_1, ..., token_{n-1} (diffusers' convention)."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def apply_embedding(model: LatentDiffusion, vectors: torch.Tensor, token: str, *,
                    source: str = "embedding") -> list[int]:
    """Add (or replace) ``token`` with these vectors (steps 1-2 of the module docstring); returns its N ids.
    ``source`` names the embedding in errors. Shapes: vectors (N, width) or (width,)."""
    tokenizer, table = model.tokenizer, token_embedding(model.text_encoder)
    if tokenizer is None:
        raise ValueError("the model has no tokenizer: cannot add textual-inversion tokens")
    vectors = vectors.detach().reshape(-1, vectors.shape[-1])  # (N, width)
    width = table.embedding_dim
    if vectors.shape[1] != width:
        raise ValueError(f"{source}: its vectors are {vectors.shape[1]} wide but this model's text encoder "
                         f"embeds tokens in {width} (an embedding for another model family?)")
    if tokenizer.vocab_size != table.num_embeddings:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but the text encoder's embedding table "
                         f"{table.num_embeddings} rows: cannot add tokens consistently")
    names, old = vector_token_names(token, len(vectors)), tokenizer.vector_tokens(token)
    with torch.no_grad():
        if len(old) == len(names):  # the same token again, as many vectors: rewrite its rows
            ids = [tokenizer.token_to_id(t) for t in names]
            table.weight[ids] = vectors.to(table.weight)
            return ids
        if old:  # another number of vectors: drop the old tokens and rows first
            keep = torch.ones(table.num_embeddings, dtype=torch.bool)
            keep[tokenizer.remove_tokens(old)] = False
            _set_table(model, table.weight[keep.to(table.weight.device)])
        ids = tokenizer.add_tokens(names)
        _set_table(model, torch.cat([table.weight, vectors.to(table.weight)]))
    return ids


def _set_table(model: LatentDiffusion, weight: torch.Tensor) -> None:
    """Give the token embedding new rows (in place, so references to the module stay valid) and record the
    new vocabulary size in the configs. Shapes: weight (vocab_size, width)."""
    encoder = model.text_encoder
    table = token_embedding(encoder)
    table.weight = nn.Parameter(weight.detach().clone(), requires_grad=table.weight.requires_grad)
    table.num_embeddings = weight.shape[0]
    encoder.cfg = dataclasses.replace(encoder.cfg, vocab_size=weight.shape[0])
    model.config = dataclasses.replace(model.config, text=encoder.cfg)


def embedding_vectors(model: LatentDiffusion, token: str) -> torch.Tensor:
    """The vectors an added token stands for, as a copy. Shapes: -> (N, width)."""
    names = model.tokenizer.vector_tokens(token) if model.tokenizer is not None else []
    if not names:
        raise KeyError(f"{token!r} is not a textual-inversion token of this model")
    ids = [model.tokenizer.token_to_id(t) for t in names]
    return token_embedding(model.text_encoder).weight[ids].detach().clone()


def load_textual_inversion(model: LatentDiffusion, path: str | Path, token: str | None = None) -> str:
    """Read an embedding file and add it under ``token`` (default: the name stored in the file, else its stem).
    Returns the token to write in prompts."""
    embedding = read_embedding(path)
    return _apply(model, embedding, token or embedding.name, path)


def load_embeddings_dir(model: LatentDiffusion, folder: str | Path,
                        skipped: dict[str, Embedding | None] | None = None) -> list[str]:
    """Add every embedding file of an A1111 embeddings folder, each under its token (``folder_token``); returns
    the tokens. Other files (preview images, notes) are ignored. Files that cannot be read, are of another width,
    repeat a token with other vectors or name a word already in the vocabulary are all named in one error, and
    then none is added (a token repeated with the same vectors, as a trainer's ``.pt`` and ``.safetensors`` are,
    is added once). With a ``skipped`` dict (a server, as A1111 starts): each such file is left out with one
    warning instead, recorded there by token (or file name) with its embedding when it could be read."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: no such embeddings folder")
    files, width = _embedding_files(folder), token_embedding(model.text_encoder).embedding_dim
    embeddings, problems, seen = [], [], {}

    def refuse(key: str, embedding: Embedding | None, problem: str) -> None:
        problems.append(problem)
        if skipped is not None:
            skipped[key] = embedding
            warnings.warn(f"embedding skipped: {problem}", stacklevel=3)

    for path in files:
        try:
            embedding = read_embedding(path)
        except CheckpointError as e:
            refuse(path.name, None, str(e))
            continue
        token = folder_token(path, embedding)
        if token.lower() in seen:
            first, first_vectors = seen[token.lower()]
            if not torch.equal(first_vectors, embedding.vectors):  # the same vectors twice (.pt and .safetensors)
                refuse(path.name, embedding, f"{path} defines the token {token!r} again, with other vectors "
                                             f"(also {first})")
            continue
        seen[token.lower()] = (path, embedding.vectors)
        if embedding.width != width:
            refuse(token, embedding, f"{path}: its vectors are {embedding.width} wide, this model's text "
                                     f"encoder's {width}")
        elif _a_word_already(model, token):
            refuse(token, embedding, f"{path}: its token {token!r} is already a word of the vocabulary")
        else:
            embeddings.append((token, embedding, path))
    if problems and skipped is None:
        raise CheckpointError(f"{folder}: {len(problems)} of {len(files)} embedding files cannot be used: "
                              + "; ".join(problems))
    return [_apply(model, embedding, token, path) for token, embedding, path in embeddings]


def load_embeddings(model: LatentDiffusion, path: str | Path, token: str | None = None) -> list[str]:
    """``--embeddings PATH`` of the commands: one file (its token ``token``, else the name stored in it) or an
    embeddings folder (``load_embeddings_dir``). Returns the tokens added."""
    if Path(path).expanduser().is_file():
        return [load_textual_inversion(model, Path(path).expanduser(), token)]
    if token:
        raise ValueError(f"a token ({token!r}) can only be given for one embedding file; {path} is not a file")
    return load_embeddings_dir(model, path)


def folder_token(path: Path, embedding: Embedding) -> str:
    """The token a file of an embeddings folder defines: its stem, as in A1111 (rename the file to rename the
    token), except where the stem is just the file name written for the stored name (``star.pt`` holding the
    name ``<star>`` defines ``<star>``, the word its trainer typed; ``file_name`` drops the brackets) or
    diffusers' fixed ``learned_embeds`` (its key is the token)."""
    name = embedding.name
    if path.suffix.lower() == ".png" and name:  # A1111 names an embedding stored in a PNG by its stored name
        return name
    if name and name != path.stem and (path.stem == "learned_embeds" or _safe_file_name(name) == path.stem):
        return name
    return path.stem


def _safe_file_name(token: str) -> str | None:
    try:
        return file_name(token)
    except ValueError:
        return None


def _embedding_files(folder: Path) -> list[Path]:
    """Embedding files under ``folder`` (recursively, hidden entries skipped), sorted by relative path."""
    found = []
    for directory, subdirs, names in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        found += [Path(directory) / n for n in names
                  if not n.startswith(".") and Path(n).suffix.lower() in EMBEDDING_SUFFIXES
                  and (Path(n).suffix.lower() != ".png" or _holds_embedding(Path(directory) / n))]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _holds_embedding(png: Path) -> bool:
    """Does a PNG of an embeddings folder carry an embedding? Previews and other images (even broken ones) do not."""
    try:
        return read_png_embedding(png) is not None
    except CheckpointError:
        return False


def _a_word_already(model: LatentDiffusion, token: str) -> bool:
    """Whether ``token`` is a word of the tokenizer's own vocabulary (not a token added earlier, which a new
    embedding may replace)."""
    tokenizer = model.tokenizer
    return tokenizer is not None and tokenizer.token_to_id(token) is not None and not tokenizer.vector_tokens(token)


def _apply(model: LatentDiffusion, embedding: Embedding, token: str, path: str | Path) -> str:
    try:
        apply_embedding(model, embedding.vectors, token, source=str(path))
    except TokenizerError as e:
        raise CheckpointError(f"{path}: cannot add the token {token!r}: {e}") from None
    model.embedding_hashes[token] = embedding_hash(path)
    return token


def embedding_hash(path: str | Path) -> str:
    """A1111's short hash of an embedding file (``TI hashes`` in the infotext): 12 hex digits of its SHA-256."""
    return sha256_file(path)[:12]


def used_embedding_hashes(model: LatentDiffusion, *texts: str) -> dict[str, str]:
    """A1111's ``TI hashes`` field for the file embeddings ``texts`` use (prompt and negative prompt), in the
    order they were loaded: {"TI hashes": "name: hash, ..."}, or {} when none is used."""
    if not model.embedding_hashes or model.tokenizer is None:
        return {}
    ids = {i for text in texts for i in model.tokenizer.encode(text)}
    used = {token: short for token, short in model.embedding_hashes.items()
            if model.tokenizer.token_to_id(token) in ids}
    return {"TI hashes": hash_list(used)} if used else {}

"""Textual-inversion embedding files: the layouts in circulation, read safely, written atomically.

==============================  =====================================================================
layout                          content
==============================  =====================================================================
A1111 ``NAME.pt``               a pickled dict: ``string_to_token`` {"*": 265}, ``string_to_param``
                                {"*": (N, width)}, ``name``, ``step``, ``sd_checkpoint`` (the model's
                                short hash), ``sd_checkpoint_name``
A1111/kohya ``NAME.safetensors``  ``emb_params`` (N, width); we also write name, step, sd_checkpoint and
                                sd_checkpoint_name as string metadata (other tools ignore it)
diffusers ``learned_embeds``    ``{token: (N, width)}`` as ``.safetensors`` or a ``.bin`` pickle
A1111 ``NAME.png``              the ``.pt`` dict as JSON (tensors: ``{"TORCHTENSOR": nested lists}``), base64,
                                in the PNG text chunk ``sd-ti-embedding``; a PNG without it is no embedding
==============================  =====================================================================

Reading accepts what A1111's ``create_embedding_from_data`` accepts: a ``string_to_param`` dict of one entry,
or any dict holding exactly one tensor (a single vector (width,) counts as N = 1); also a bare tensor. Pickles
are read only by ``torch.load(weights_only=True)``, which refuses (never executes) anything beyond tensors
and plain containers. The one class allowed beyond those is ``torch.nn.ParameterDict``, which torch 1.11-era
A1111 files hold under ``string_to_param`` (rebuilt from its state, no code of the file runs).

The embedding's own name is A1111's ``name`` field, the diffusers key, or our ``name`` metadata, else the file
stem. (A1111 itself names the token after the file stem: see ``load_embeddings_dir``.) ``file_name`` is the
file stem we write for a token: ``<star>`` becomes ``star``, as A1111 keeps only letters, digits and ``._- ``.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from nanoldm.checkpoint.formats import (CheckpointError, load_pickle, read_tensors, write_a1111_pickle,
                                        write_safetensors)

__all__ = ["Embedding", "read_embedding", "write_a1111_pt", "write_a1111_safetensors", "write_diffusers",
           "EMBEDDING_SUFFIXES", "A1111_KEY", "PNG_KEY", "read_png_embedding"]

EMBEDDING_SUFFIXES = (".pt", ".safetensors", ".bin", ".png")
PNG_KEY = "sd-ti-embedding"  # A1111's PNG text chunk: base64 of the .pt dict as JSON, tensors as {"TORCHTENSOR": [...]}
A1111_KEY = "emb_params"  # the tensor name of an A1111/kohya .safetensors embedding
A1111_TOKEN = {"*": 265}  # A1111 writes this fixed placeholder (the id of "*" in CompVis' tokenizer)
_FIELDS = ("step", "sd_checkpoint", "sd_checkpoint_name")


@dataclass
class Embedding:
    """Learned token vectors and what A1111 records with them. Shapes: vectors (N, width) float32."""

    name: str
    vectors: torch.Tensor
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None

    @property
    def num_vectors(self) -> int:
        return self.vectors.shape[0]

    @property
    def width(self) -> int:
        return self.vectors.shape[1]


# ---- reading ----

def read_embedding(path: str | Path) -> Embedding:
    """Any of the layouts in the module docstring; a clear ``CheckpointError`` for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise CheckpointError(f"{path}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")
    if suffix == ".png":
        data, metadata = read_png_embedding(path), {}
        if data is None:
            raise CheckpointError(f"{path}: a PNG without an embedding (it has no {PNG_KEY} text chunk)")
    else:
        data, metadata = read_tensors(path) if suffix == ".safetensors" else (_load_pickle(path), {})
    name, vectors, fields = _parse(data, path)
    if name is None or name == A1111_KEY:
        name = metadata.get("name") or path.stem
    fields.update({k: metadata[k] for k in _FIELDS if k in metadata and k not in fields})
    step = fields.get("step")
    return Embedding(name, vectors, int(step) if step is not None and str(step).isdigit() else None,
                     _str_or_none(fields.get("sd_checkpoint")), _str_or_none(fields.get("sd_checkpoint_name")))


def read_png_embedding(path: str | Path) -> dict | None:
    """The embedding dict A1111 stores in a PNG's ``sd-ti-embedding`` text chunk; None if the PNG has none (an
    ordinary image, e.g. a preview beside an embedding)."""
    try:
        with Image.open(path) as image:
            image.load()  # text chunks after the image data are read only now
            text = getattr(image, "text", {}).get(PNG_KEY)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PNG ({e})") from None
    if text is None:
        return None
    try:
        return json.loads(base64.b64decode(text), object_hook=_tensor_hook)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its {PNG_KEY} chunk is not base64 JSON ({_first_line(e)})") from None


def _tensor_hook(d: dict):
    return torch.tensor(d["TORCHTENSOR"], dtype=torch.float32) if "TORCHTENSOR" in d else d


def _first_line(e: BaseException) -> str:
    return str(e).split("\n")[0]


def _load_pickle(path: Path):
    # torch 1.11-era A1111 files hold a ParameterDict: rebuilt from its state, no code from the file runs
    return load_pickle(path, what="embedding file", allow=(torch.nn.ParameterDict,))


def _parse(data, path: Path) -> tuple[str | None, torch.Tensor, dict]:
    """(name or None, vectors (N, width), A1111's other fields) of a loaded file."""
    if isinstance(data, torch.Tensor):
        return None, _as_vectors(data, path), {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not an embedding")
    if "string_to_param" in data:  # A1111
        params = data["string_to_param"]
        params = dict(getattr(params, "_parameters", params))  # torch 1.11-era files: a ParameterDict
        if len(params) != 1:
            raise CheckpointError(f"{path}: string_to_param holds {len(params)} entries; an embedding has one")
        name = data.get("name")
        return (name if isinstance(name, str) and name else None), _as_vectors(next(iter(params.values())), path), \
            {k: data.get(k) for k in _FIELDS}
    if "clip_l" in data and "clip_g" in data:
        raise CheckpointError(f"{path}: an SDXL embedding (clip_l + clip_g); only SD 1.x embeddings are supported")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != 1:
        raise CheckpointError(f"{path}: not a textual-inversion embedding: expected string_to_param (A1111) or a "
                              f"single tensor ({A1111_KEY} or {{token: tensor}}), found {len(tensors)} tensors "
                              f"({', '.join(list(map(str, data))[:5])})")
    (key, tensor), = tensors.items()
    return str(key), _as_vectors(tensor, path), {}


def _as_vectors(t, path: Path) -> torch.Tensor:
    """(width,) or (N, width) floating tensor -> (N, width) float32."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() not in (1, 2) or t.numel() == 0:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise CheckpointError(f"{path}: embedding vectors must be a float tensor (width,) or (N, width), got {shape}")
    return t.detach().reshape(-1, t.shape[-1]).to(torch.float32).clone()


# ---- writing ----

def write_a1111_pt(embedding: Embedding, path: str | Path) -> None:
    """A1111's ``.pt`` layout: plain dicts, strings, ints and one tensor, so it loads with ``weights_only``; in
    torch's legacy serialization, which A1111's safe unpickler accepts."""
    data = {"string_to_token": dict(A1111_TOKEN), "string_to_param": {"*": _plain(embedding.vectors)},
            "name": embedding.name, **{k: getattr(embedding, k) for k in _FIELDS}}
    write_a1111_pickle(path, data)


def write_a1111_safetensors(embedding: Embedding, path: str | Path) -> None:
    """``{"emb_params": (N, width)}`` with name/step/sd_checkpoint/sd_checkpoint_name as metadata."""
    metadata = {"name": embedding.name}
    metadata.update({k: str(getattr(embedding, k)) for k in _FIELDS if getattr(embedding, k) is not None})
    write_safetensors(path, {A1111_KEY: _plain(embedding.vectors)}, metadata)


def write_diffusers(embedding: Embedding, path: str | Path) -> None:
    """diffusers' ``learned_embeds.safetensors``: ``{token: (N, width)}``, as its training script writes."""
    write_safetensors(path, {embedding.name: _plain(embedding.vectors)})


def _plain(vectors: torch.Tensor) -> torch.Tensor:
    return vectors.detach().to("cpu", torch.float32).contiguous().clone()


def _str_or_none(x) -> str | None:
    return None if x is None else str(x)


def file_name(token: str) -> str:
    """A1111's embedding file name for a token: letters, digits, ".", "_", "-" and spaces kept."""
    name = "".join(c for c in token if c.isalnum() or c in "._- ").strip()
    if not name:
        raise ValueError(f"the token {token!r} has no letters or digits to name its files after")
    return name

"""Reading and writing tensor files safely.

- ``.safetensors``: read with a clear error when truncated or corrupt.
- ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: read ONLY with ``torch.load(weights_only=True)``: a pickle that would
  import or call anything beyond tensors is refused, never executed.
- Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``; an interrupted write
  leaves whatever was there before intact.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of one file. ``.ckpt`` files have their ``state_dict`` unwrapped."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a .safetensors or .ckpt file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path), {}
    raise CheckpointError(f"{path}: unknown checkpoint type {suffix!r}; expected .safetensors, .ckpt, .pt, .pth or .bin")


def read_metadata(path: str | Path) -> dict[str, str]:
    """Only the JSON header's metadata of a safetensors file (no tensor is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > os.path.getsize(path) - 8:
                raise ValueError("header length out of range")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return header.get("__metadata__", {}) or {}


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_one_line(e)})") from None
    return tensors, metadata


def load_pickle(path: str | Path, *, what: str = "checkpoint", allow: tuple[type, ...] = ()):
    """The object in a ``.ckpt``/``.pt`` file, loaded ONLY with ``torch.load(weights_only=True)`` (plain
    containers, numbers, strings and tensors; ``allow`` adds classes that are rebuilt from their state, never
    run). A pickle that would run code is refused with a CheckpointError naming the file; so is a broken one."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: its pickle asks to run code beyond plain tensors ({_refused_call(str(e))}), which "
            f"weights-only loading never executes") from None
    except (KeyError, IndexError):  # torch's legacy reader on a file that is no pickle at all (a text file)
        raise CheckpointError(f"{path}: not a {what}: neither a PyTorch zip nor a pickle") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({_first_sentence(str(e))})") from None


def _refused_call(message: str) -> str:
    """What a refused pickle asked for, from torch's long message: "posix.system", or its first reason."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"it calls {found.group(1)}"
    return _first_sentence(message.split("WeightsUnpickler error:")[-1])


def _first_sentence(message: str) -> str:
    """The first sentence of an error message, whole, on one line (torch appends long advice)."""
    text = _one_line(message)
    end = re.search(r"[.:;]\s", text)
    return (text[:end.start()] if end else text).rstrip(".")


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    obj = load_pickle(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dictionary of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write ``tensors`` (made contiguous, shared storage broken) to ``path``."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().clone() if _shares_storage(v) else v.detach().contiguous()
               for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def write_a1111_pickle(path: str | Path, obj) -> None:
    """Atomically write ``obj`` (plain containers, numbers, strings, tensors) as a ``.pt`` that A1111's safe
    unpickler (``modules/safe.py``) accepts: torch's legacy, non-zip serialization. Torch 2.x's zip layout adds
    entries (``.format_version``, ``byteorder``, ``.data/serialization_id``, ...) that A1111 refuses."""
    with atomic_path(Path(path)) as tmp:
        torch.save(obj, tmp, _use_new_zipfile_serialization=False)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; on success it is fsynced and renamed over it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        make_parent(self.path)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(self.tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a saved file gets the usual permissions
        os.replace(self.tmp, self.path)


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` (usual permissions); on success it replaces ``folder``, on failure it
    is removed and ``folder`` is left as it was."""
    folder = Path(folder)
    make_parent(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def check_folder(folder: str | Path) -> None:
    """A file where ``folder`` or one of its parents must be is a ``CheckpointError`` naming it (checked before
    work starts, and so that an atomic write never reports its temporary name)."""
    folder = Path(folder).absolute()
    for f in (*reversed(folder.parents), folder):
        if f.exists() and not f.is_dir():
            raise CheckpointError(f"cannot write into {f}: it is a file, not a folder")


def make_parent(path: str | Path) -> None:
    """Create ``path``'s folder and its parents (see ``check_folder``)."""
    check_folder(Path(path).parent)
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _shares_storage(t: torch.Tensor) -> bool:
    return t.untyped_storage().nbytes() != t.numel() * t.element_size()


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# ---- streaming: one tensor at a time (checkpoint merging) ----

SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}
_DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


class SafetensorsReader:
    """The tensors of one ``.safetensors`` file, read one at a time with plain reads. No memory map: a process
    reading a file whole through one keeps every page it touched resident, so a merge would hold its inputs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        with open(self.path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        self._base, size = 8 + n, os.path.getsize(self.path)
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int, int]] = {}
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            start, end = entry["data_offsets"]
            if entry["dtype"] not in SAFETENSORS_DTYPES or self._base + end > size:
                why = "lies past the end" if self._base + end > size else f"has dtype {entry['dtype']}"
                raise CheckpointError(f"{self.path}: truncated or corrupt safetensors file (tensor {key!r} {why})")
            self.entries[key] = (SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]), start, end)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get(self, key: str) -> torch.Tensor:
        dtype, shape, start, end = self.entries[key]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        with open(self.path, "rb") as f:
            f.seek(self._base + start)
            data = bytearray(f.read(end - start))
        return torch.frombuffer(data, dtype=dtype).reshape(shape)


def write_safetensors_streamed(path: str | Path, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                               tensors, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a ``.safetensors`` file whose tensors arrive one at a time: ``specs`` (key -> dtype,
    shape, in file order) makes the header; ``tensors`` yields (key, tensor) in that order. Only one tensor is
    held at a time."""
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for key, (dtype, shape) in specs.items():
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for (key, t), (want, (dtype, shape)) in zip(tensors, specs.items(), strict=True):
            if key != want or t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise ValueError(f"streamed tensor {key!r} {t.dtype} {tuple(t.shape)} does not match the header's "
                                 f"{want!r} {dtype} {tuple(shape)}")
            f.write(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)

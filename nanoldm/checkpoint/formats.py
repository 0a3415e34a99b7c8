"""Reading and writing tensor files safely.

- ``.safetensors``: read with a clear error when truncated or corrupt.
- ``.ckpt`` / ``.pt`` / ``.pth`` / ``.bin``: read ONLY with ``torch.load(weights_only=True)``: a pickle that would
  import or call anything beyond tensors is refused, never executed.
- Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``; an interrupted write
  leaves whatever was there before intact.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

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
        # torch's message is long advice; the reason is the first sentence after "WeightsUnpickler error:"
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0].split(". ")[0][:200]
        raise CheckpointError(
            f"{path}: refused: its pickle asks to run code beyond plain tensors, which weights-only "
            f"loading never executes ({reason})") from None
    except (KeyError, IndexError):  # torch's legacy reader on a file that is no pickle at all (a text file)
        raise CheckpointError(f"{path}: not a {what}: neither a PyTorch zip nor a pickle") from None
    except (EOFError, RuntimeError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt {what} ({_one_line(e)[:200]})") from None


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

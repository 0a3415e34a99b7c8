"""The checkpoints a server offers, found once in its folders: clients choose one by its title (A1111's
``/sd-models`` entries), never by a path, so no request can make the server read a file it was not given.

A title is the file's name relative to its folder, followed by ``[hash]`` once the short hash (A1111's, the
first 10 hex digits of the file's SHA-256) is known: it is computed when the model is loaded, not for every file
at start-up (a 4 GB checkpoint takes seconds to hash). A lookup accepts the title with or without the hash, the
model name (the name without suffix) or the short hash.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nanoldm.builtin import builtin_model_path
from nanoldm.pipelines.infotext import model_hash

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
DIFFUSERS_MARKER = "model_index.json"


@dataclass
class Checkpoint:
    name: str  # the file's name relative to its folder ("sub/model.safetensors")
    path: Path
    hash: str | None = None  # A1111's short hash, once known

    @property
    def model_name(self) -> str:
        """The name without its suffix ("sub/model")."""
        return self.name[: -len(Path(self.name).suffix)] if Path(self.name).suffix else self.name

    @property
    def title(self) -> str:
        return f"{self.name} [{self.hash}]" if self.hash else self.name

    def compute_hash(self) -> str | None:
        """The short hash of a file (folders have none), computed once."""
        if self.hash is None and self.path.is_file():
            self.hash = model_hash(self.path)
        return self.hash


class CheckpointCatalog:
    """``--model`` (or the built-in model) first, then every checkpoint under ``--models-dir``."""

    def __init__(self, model: Path | None = None, models_dir: Path | None = None):
        self.model, self.models_dir = model, models_dir
        self.entries: list[Checkpoint] = []
        self.refresh()

    def refresh(self) -> None:
        """Search the folder again; hashes already known are kept."""
        known = {entry.path.resolve(): entry for entry in self.entries}
        found = [self._first()]
        if self.models_dir is not None:
            found += [Checkpoint(path.relative_to(self.models_dir).as_posix(), path)
                      for path in _checkpoint_paths(Path(self.models_dir))]
        unique: dict[Path, Checkpoint] = {}
        for entry in found:
            unique.setdefault(entry.path.resolve(), known.get(entry.path.resolve(), entry))
        self.entries = list(unique.values())

    def _first(self) -> Checkpoint:
        path = Path(self.model) if self.model is not None else builtin_model_path()
        if self.models_dir is not None and _is_under(path, Path(self.models_dir)):
            return Checkpoint(path.resolve().relative_to(Path(self.models_dir).resolve()).as_posix(), path)
        return Checkpoint(path.name, path)

    @property
    def default(self) -> Checkpoint:
        return self.entries[0]

    def find(self, title: str) -> Checkpoint:
        """The checkpoint a client names; ValueError listing the titles for any other name."""
        for entry in self.entries:
            if title in (entry.title, entry.name, entry.model_name) or (entry.hash and title == entry.hash):
                return entry
        raise ValueError(f"unknown model {title!r}; available: {', '.join(e.title for e in self.entries)}")


def _checkpoint_paths(folder: Path) -> list[Path]:
    """Checkpoint files and diffusers folders under ``folder`` (recursively), sorted by path."""
    files = [p for suffix in CHECKPOINT_SUFFIXES for p in folder.rglob(f"*{suffix}") if p.is_file()]
    folders = [marker.parent for marker in folder.rglob(DIFFUSERS_MARKER)]
    inside = [f for f in files if any(_is_under(f, d) for d in folders)]  # a diffusers folder's own files
    return sorted({*files, *folders} - set(inside))


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False

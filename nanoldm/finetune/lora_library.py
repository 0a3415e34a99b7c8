"""The LoRAs a pipeline knows, and A1111's prompt tags for them.

Two ways to use a LoRA, as in A1111:

- loaded explicitly (``Pipeline.load_lora(path, weight)``, ``--lora FILE:w``): merged into the weights at once
  and kept for every generation after, until :meth:`LoraLibrary.unload`;
- named in the prompt, ``<lora:name:w>`` or ``<lora:name:te_w:unet_w>`` (also ``te=``/``unet=`` by name; w
  defaults to 1, unet_w to te_w): the tag is taken out of the text before it is encoded (it stays in the
  infotext's prompt) and the LoRA is merged, after the explicit ones, for that generation. Names are those of
  loaded LoRAs (file stem), then the stems of the ``.safetensors`` / ``.pt`` / ``.ckpt`` files under ``folder``
  (``--lora-dir``); files are read on first use and kept. A name found nowhere warns ("Lora not found: name",
  as A1111) and the generation goes on without it.

Merged weights stay merged until a generation asks for another set (repeating a prompt costs nothing); the
infotext records ``Lora hashes: "name: hash, ..."`` (A1111's short hash, :func:`lora_hash`).
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from torch import nn

from nanoldm.checkpoint.hashing import hash_list
from nanoldm.config import ModelConfig
from nanoldm.finetune.extra_networks import Tag, finite_number, network_files
from nanoldm.finetune.lora import ActiveLora, LoraStack
from nanoldm.finetune.lora_file import LoraWeights, lora_hash, read_lora

__all__ = ["LoraLibrary", "LoraNotFoundWarning", "parse_lora_args"]

SUFFIXES = (".safetensors", ".pt", ".ckpt")  # in order of preference when several exist


class LoraNotFoundWarning(UserWarning):
    """A prompt named a LoRA that is neither loaded nor in the LoRA folder; the generation went on without it."""


@dataclass(frozen=True)
class _File:
    weights: LoraWeights
    hash: str


class LoraLibrary:
    """A pipeline's LoRAs: the explicitly loaded ones, the files read so far and the folder tags search."""

    kinds = ("lora", "lyco")

    def __init__(self, parts: Mapping[str, nn.Module], config: ModelConfig, *, folder: str | Path | None = None):
        self.stack, self.config, self.folder = LoraStack(parts), config, folder
        self.loaded: list[ActiveLora] = []
        self._files: dict[Path, _File] = {}
        self._paths: dict[str, Path] = {}  # names of explicitly loaded LoRAs

    def load(self, path: str | Path, weight: float = 1.0, *, te_weight: float | None = None) -> ActiveLora:
        """Read a LoRA file and merge it (after those already loaded) until :meth:`unload`. ``te_weight``: the
        text encoder's multiplier (default: ``weight``)."""
        path = Path(path)
        name = path.stem
        unet = finite_number(weight, f"LoRA {name!r}: weight")
        te = unet if te_weight is None else finite_number(te_weight, f"LoRA {name!r}: text-encoder weight")
        entry = ActiveLora(name, self._read(path).weights, te=te, unet=unet)
        self.stack.apply([*self.loaded, entry])  # checked whole first: a misfit changes nothing
        self.loaded.append(entry)
        self._paths[name] = path
        return entry

    def unload(self) -> None:
        """Forget the explicitly loaded LoRAs and put back every weight they changed, bitwise."""
        self.loaded = []
        self.stack.restore()

    def find(self, name: str) -> Path | None:
        """The file of a LoRA by name: a loaded one, else one in ``folder``; None if there is none."""
        return self._paths.get(name) or self.files().get(name)

    def files(self) -> dict[str, Path]:
        """name (file stem) -> path for every LoRA file under ``folder`` (searched recursively)."""
        return network_files(self.folder, SUFFIXES, "LoRA")

    @contextmanager
    def applied(self, tags: list[Tag]) -> Iterator[dict[str, str]]:
        """Merge the loaded LoRAs and the prompt's ``<lora:...>`` tags (``tags``: (name, args) each); yield the
        infotext fields. A missing name warns and is skipped."""
        entries = []
        for name, args in tags:
            path = self.find(name)
            if path is None:
                where = f" in {self.folder}" if self.folder else " (no LoRA folder is set: --lora-dir)"
                warnings.warn(f"Lora not found: {name} (neither loaded nor{where}); generating without it",
                              LoraNotFoundWarning, stacklevel=2)
                continue
            te, unet = parse_lora_args(name, args)
            entries.append(ActiveLora(name, self._read(path).weights, te=te, unet=unet))
        self.stack.apply([*self.loaded, *entries])
        yield self.infotext()

    def infotext(self) -> dict[str, str]:
        """A1111's ``Lora hashes`` field for the merged LoRAs ({} when none is)."""
        hashes = {}
        for lora in self.stack.active:
            path = self.find(lora.name)
            if path is not None:
                hashes[lora.name] = self._read(path).hash
        return {"Lora hashes": hash_list(hashes)} if hashes else {}

    def _read(self, path: Path) -> _File:
        key = path.resolve()
        if key not in self._files:
            weights, metadata = read_lora(path, self.config)
            self._files[key] = _File(weights, lora_hash(path, metadata))
        return self._files[key]


def parse_lora_args(name: str, args: tuple[str, ...]) -> tuple[float, float]:
    """A tag's arguments -> (te_w, unet_w), as A1111 reads them: positional ``te_w[:unet_w]`` (te_w defaults to
    1, unet_w to te_w), or named ``te=`` / ``unet=``; other named arguments (``dyn=``) are ignored."""
    positional = [a for a in args if "=" not in a]
    named = dict(a.split("=", 1) for a in args if "=" in a)
    te = finite_number(named.get("te", positional[0] if positional else 1.0), f"LoRA {name!r}: weight")
    unet = finite_number(named.get("unet", positional[1] if len(positional) > 1 else te),
                         f"LoRA {name!r}: UNet weight")
    return te, unet

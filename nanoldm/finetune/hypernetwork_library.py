"""The hypernetworks a pipeline knows, and A1111's prompt tags for them.

Two ways to use a hypernetwork, as in A1111:

- loaded explicitly (``Pipeline.load_hypernetwork(path, strength)``, ``--hypernetwork PATH``): applied to
  the UNet at once and to every generation after, until ``clear()``; named in the infotext
  (``Hypernet: name``, and ``Hypernet strength`` when not 1);
- named in the prompt, ``<hypernet:name:0.8>`` (strength defaults to 1): the tag is taken out of the text
  before it is encoded (it stays in the infotext's prompt), the hypernetwork runs after the explicit ones for
  that one generation, and the UNet's hooks are restored afterwards. Names are those of loaded hypernetworks
  (file stem or stored name), then the stems of the ``.safetensors`` / ``.pt`` files under ``folder``
  (``--hypernetwork-dir``); files are read on first use and kept.

The tags reach it through :func:`nanoldm.finetune.extra_networks.extra_networks_applied`, which hands
``<lora:...>`` tags to the LoRA library.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from torch import nn

from nanoldm.finetune.extra_networks import Tag, finite_number, network_files
from nanoldm.finetune.hypernetwork import Hypernetwork, apply_hypernetworks
from nanoldm.finetune.hypernetwork_file import load_hypernetwork
from nanoldm.layers.attention import Attention

__all__ = ["HypernetworkLibrary", "parse_strength"]

TAG_KIND = "hypernet"
SUFFIXES = (".safetensors", ".pt")  # in order of preference when both exist


class HypernetworkLibrary:
    """A pipeline's hypernetworks: the explicitly loaded ones, a name index and the folder tags search."""

    kinds = (TAG_KIND,)

    def __init__(self, unet: nn.Module, *, folder: str | Path | None = None):
        self.unet, self.folder = unet, folder
        self.loaded: list[tuple[Hypernetwork, float]] = []  # explicit, in order
        self._by_name: dict[str, Hypernetwork] = {}

    def load(self, path: str | Path, strength: float = 1.0) -> Hypernetwork:
        """Load a file and apply it (after those already loaded) until :meth:`clear`."""
        hn = load_hypernetwork(path)
        strength = parse_strength(strength, hn.name)
        apply_hypernetworks(self.unet, [*self.loaded, (hn, strength)])  # refuses a wrong width before we keep it
        self.loaded.append((hn, strength))
        self._by_name.update({Path(path).stem: hn, hn.name: hn})
        return hn

    def clear(self) -> None:
        """Forget the explicitly loaded hypernetworks and take every hook off the UNet."""
        self.loaded = []
        apply_hypernetworks(self.unet, [])

    def find(self, name: str) -> Hypernetwork:
        """A hypernetwork by name: a loaded one, else a file in ``folder``; a clear error naming the known ones."""
        if name in self._by_name:
            return self._by_name[name]
        files = self.files()
        if name not in files:
            known = sorted(set(self._by_name) | set(files))
            where = f" or in {self.folder}" if self.folder else " (no hypernetwork folder is set: --hypernetwork-dir)"
            raise ValueError(f"unknown hypernetwork {name!r} in the prompt: none is loaded by that name{where}; "
                             f"known: {', '.join(known) if known else 'none'}")
        self._by_name[name] = load_hypernetwork(files[name])
        return self._by_name[name]

    def files(self) -> dict[str, Path]:
        """name (file stem) -> path for every hypernetwork file under ``folder`` (searched recursively)."""
        return network_files(self.folder, SUFFIXES, "hypernetwork")

    @contextmanager
    def applied(self, tags: list[Tag]) -> Iterator[dict[str, str]]:
        """Apply the prompt's ``<hypernet:name:strength>`` tags (``tags``: (name, args) each) after the loaded
        hypernetworks for the duration of the block; yield the infotext fields. The UNet's hooks are put back as
        they were afterwards, even on error."""
        entries = [(self.find(name), parse_strength(args[0] if args else 1.0, name)) for name, args in tags]
        if not entries:
            yield self.infotext()
            return
        attentions = [m for m in self.unet.modules() if isinstance(m, Attention)]
        previous = [a.context_hook for a in attentions]
        apply_hypernetworks(self.unet, [*self.loaded, *entries])
        try:
            yield self.infotext()
        finally:
            for attention, hook in zip(attentions, previous):
                attention.context_hook = hook

    def infotext(self) -> dict[str, str]:
        """A1111's fields for the explicitly loaded hypernetworks (tags speak for themselves in the prompt)."""
        if not self.loaded:
            return {}
        strengths = [s for _, s in self.loaded]
        fields = {"Hypernet": ", ".join(hn.name for hn, _ in self.loaded)}
        if any(s != 1 for s in strengths):
            fields["Hypernet strength"] = ", ".join(f"{s:g}" for s in strengths)
        return fields


def parse_strength(value, name: str) -> float:
    """A finite float, or a clear error naming the hypernetwork."""
    return finite_number(value, f"hypernetwork {name!r}: strength")

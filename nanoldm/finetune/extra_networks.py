"""A1111's extra-network prompt tags, ``<kind:name:arg...>``, handed to the library that knows each kind.

A pipeline has one library per kind of extra network (hypernetworks: ``<hypernet:...>``; LoRAs: ``<lora:...>``,
also spelled ``<lyco:...>``). :func:`extra_networks_applied` takes the tags out of the prompt once
(:func:`nanoldm.text.prompt.extract_extra_networks`), gives each library its own tags for the duration of one
generation, and yields the prompt without tags with the infotext fields the libraries report. A tag of a kind
no library knows is a clear error.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Iterator, Protocol

from nanoldm.text.prompt import extract_extra_networks

__all__ = ["ExtraNetworkLibrary", "Tag", "extra_networks_applied", "finite_number"]

Tag = tuple[str, tuple[str, ...]]
"""One tag of a library's kind: (name, arguments as written)."""


class ExtraNetworkLibrary(Protocol):
    kinds: tuple[str, ...]  # the tag kinds it handles, e.g. ("lora", "lyco")

    def applied(self, tags: list[Tag]) -> AbstractContextManager[dict[str, str]]:
        """Apply the tags (and whatever is loaded explicitly) for one generation; yield the infotext fields."""


@contextmanager
def extra_networks_applied(prompt: str, libraries: Sequence[ExtraNetworkLibrary]
                           ) -> Iterator[tuple[str, dict[str, str]]]:
    """Yield (the prompt without tags, infotext fields) with every library's tags applied."""
    text, found = extract_extra_networks(prompt)
    by_kind = {kind: i for i, library in enumerate(libraries) for kind in library.kinds}
    tags: list[list[Tag]] = [[] for _ in libraries]
    for kind, name, args in found:
        if kind not in by_kind:
            known = ", ".join(f"<{k}:name:...>" for k in by_kind)
            raise ValueError(f"<{kind}:{name}> in the prompt: {kind} extra networks are not supported, only {known}")
        tags[by_kind[kind]].append((name, args))
    fields: dict[str, str] = {}
    with ExitStack() as stack:
        for library, own in zip(libraries, tags):
            fields.update(stack.enter_context(library.applied(own)))
        yield text, fields


def finite_number(value, label: str) -> float:
    """``value`` as a finite float, or a ValueError starting with ``label`` (e.g. "LoRA 'ink': weight")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{label} must be finite, got {value!r}")
    return number


def network_files(folder: str | Path | None, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    """name (file stem) -> path for every ``suffixes`` file under ``folder`` (searched recursively; where one name
    has several files, the suffix listed first wins); {} without a folder. ``what`` names the folder in errors."""
    if not folder:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: the {what} folder does not exist")
    found: dict[str, Path] = {}
    for suffix in reversed(suffixes):  # the preferred suffix overwrites
        found.update({p.stem: p for p in sorted(folder.rglob(f"*{suffix}")) if p.is_file()})
    return found

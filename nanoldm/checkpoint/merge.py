"""Checkpoint merging (A1111's Checkpoint Merger), streamed one tensor at a time.

    weighted sum     out = A * (1 - alpha) + B * alpha            (alpha 0: A exactly, alpha 1: B exactly)
    add difference   out = A + (B - M) * alpha                     (M: the base B was finetuned from)

then LoRAs baked in: ``W += w * (alpha_l / r) * up @ down`` per adapted layer (:func:`finetune.lora.merged_weight`,
the same sum applied at run time). Sums are taken in float32 and stored in A's dtype.

Inputs and output are any checkpoint the project reads and writes (our single file, an SD 1.x single file, a
diffusers folder); each input is opened as a :class:`CheckpointSource`, which knows every tensor's name (ours),
shape and dtype from the file headers and reads a tensor only when asked. Everything is checked before anything
is written: the inputs hold the same tensors in the same shapes, every LoRA fits. The output is written atomically
(:func:`formats.write_safetensors_streamed`), its header first, then each tensor as it is computed, so the process
holds a few tensors, never a model. The recipe is recorded in the output's metadata (``sd_merge_recipe``, the
key A1111 uses). A ``.ckpt`` input is the exception: a pickle is read whole.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from nanoldm.checkpoint import keymap
from nanoldm.checkpoint.formats import (CheckpointError, atomic_folder, SafetensorsReader, read_metadata, read_tensors,
                                        write_safetensors_streamed)
from nanoldm.checkpoint.infer import infer_config_from_sd
from nanoldm.checkpoint.load import (ADDED_TOKENS_KEY, CONFIG_KEY, DIFFUSERS_PARTS, LAYOUT_KEY, find_weights,
                                     read_diffusers_config)
from nanoldm.checkpoint.save import FORMATS, check_output, write_diffusers_configs
from nanoldm.config import ModelConfig
from nanoldm.finetune.lora import ActiveLora, check_fits, lora_contributions, merged_weight
from nanoldm.finetune.lora_file import lora_hash, read_lora
from nanoldm.model import LatentDiffusion, check_state
from nanoldm.text.tokenizer import CLIPTokenizer

__all__ = ["METHODS", "FORMATS", "RECIPE_KEY", "MergeRecipe", "CheckpointSource", "merge_checkpoints"]

METHODS = ("weighted-sum", "add-difference")
RECIPE_KEY = "sd_merge_recipe"
_A1111_METHOD = {"weighted-sum": "Weighted sum", "add-difference": "Add difference", None: "No interpolation"}


@dataclass(frozen=True)
class MergeRecipe:
    """How to merge: ``method`` (None: only bake LoRAs into A), ``alpha``, and LoRAs as (path, weight)."""

    method: str | None = "weighted-sum"
    alpha: float = 0.5
    loras: tuple[tuple[Path, float], ...] = ()

    def __post_init__(self):
        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; choose one of {', '.join(METHODS)}")
        for what, value in (("alpha", self.alpha), *((f"LoRA {p} weight", w) for p, w in self.loras)):
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"merge {what} must be a finite number, got {value!r}")


class CheckpointSource:
    """One checkpoint opened for streaming: ``config``, ``added_tokens``, ``kind`` ("nanoldm" | "sd" |
    "diffusers"), ``meta`` (our key -> a meta tensor of the shape and dtype it is read as), and :meth:`get`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise CheckpointError(f"{self.path}: no such file or folder")
        self._where: dict[str, tuple[Callable[[str], torch.Tensor], str]] = {}  # our key -> (reader, file key)
        self.meta: dict[str, torch.Tensor] = {}
        if self.path.is_dir():
            self._open_diffusers()
        else:
            self._open_file()

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` (our name, our shape), read from the file now."""
        read, file_key = self._where[key]
        t = read(file_key)
        return keymap.conv1x1_to_linear(t) if _is_vae_attention(key) else t

    def _add(self, ours: str, read: Callable[[str], torch.Tensor], file_key: str, meta: torch.Tensor) -> None:
        self._where[ours] = (read, file_key)
        self.meta[ours] = keymap.conv1x1_to_linear(meta) if _is_vae_attention(ours) else meta

    def _open_file(self) -> None:
        headers, read = self._file_headers()
        metadata = read_metadata(self.path) if self.path.suffix.lower() == ".safetensors" else {}
        self.added_tokens = json.loads(metadata.get(ADDED_TOKENS_KEY, "[]"))
        if CONFIG_KEY in metadata:
            self.config = ModelConfig.from_json(metadata[CONFIG_KEY])
            self.kind = "sd" if metadata.get(LAYOUT_KEY) == "sd" else "nanoldm"
        else:
            self.kind = "sd"
            small = {k: read(k) for k in ("scale_factor", "betas") if k in headers}  # values, not just shapes
            try:
                self.config = infer_config_from_sd({**headers, **small})
            except ValueError as e:
                raise CheckpointError(f"{self.path}: {e}") from None
        if self.kind == "nanoldm":
            for key, meta in headers.items():
                self._add(key, read, key, meta)
            return
        reverse = {sd: ours for ours, sd in keymap.sd_table(self.config).items()}
        for key, meta in headers.items():
            canon = keymap.canonical_sd_key(key)
            if canon is not None:
                self._add(reverse.get(canon, key), read, key, meta)

    def _file_headers(self) -> tuple[dict[str, torch.Tensor], Callable[[str], torch.Tensor]]:
        """(file key -> meta tensor, reader) of a single file; a pickle is read whole (it cannot be streamed)."""
        if self.path.suffix.lower() == ".safetensors":
            reader = SafetensorsReader(self.path)
            return {k: torch.empty(s, dtype=d, device="meta") for k, (d, s, _, _) in reader.entries.items()}, reader.get
        tensors, _ = read_tensors(self.path)
        return {k: v.to("meta") for k, v in tensors.items()}, tensors.__getitem__

    def _open_diffusers(self) -> None:
        self.kind = "diffusers"
        self.config, tokenizer = read_diffusers_config(self.path)
        self.added_tokens = list(getattr(tokenizer, "added_tokens", []))
        for part, stem in DIFFUSERS_PARTS:
            reader = SafetensorsReader(find_weights(self.path / part, stem, self.path))
            for key, (dtype, shape, _, _) in reader.entries.items():
                meta = torch.empty(shape, dtype=dtype, device="meta")
                for ours in keymap.diffusers_to_ours({part: {key: meta}}, self.config):  # one name (or none)
                    self._add(ours, reader.get, key, meta)


def _is_vae_attention(ours: str) -> bool:
    return ours.startswith(keymap.OURS_PREFIX["vae"]) and ours[len("vae."):] in keymap.VAE_ATTENTION_WEIGHTS


def merge_checkpoints(a: str | Path, out: str | Path, recipe: MergeRecipe, *, b: str | Path | None = None,
                      base: str | Path | None = None, format: str | None = None, overwrite: bool = False) -> dict:
    """Merge ``a`` (and ``b``, and ``base`` for add-difference) by ``recipe`` into ``out`` in ``format`` (None: a
    diffusers folder when ``out`` has no suffix, else ``a``'s layout). Returns the recipe written into the metadata."""
    out = Path(out)
    sources = _open_inputs(a, b, base, recipe)
    first = sources[0]
    if format is None:  # a folder: diffusers; a file: A's layout, ours when A is a folder
        format = "diffusers" if out.suffix == "" else first.kind if first.kind != "diffusers" else "nanoldm"
    check_output(out, format, overwrite)
    loras = [ActiveLora(Path(p).stem, read_lora(p, first.config)[0], te=w, unet=w) for p, w in recipe.loras]
    for lora in loras:
        for path, module in lora.weights.items():
            meta = first.meta.get(path + ".weight")
            check_fits(lora.name, path, module, None if meta is None else meta.shape)
    written = _recipe_metadata(recipe, sources)
    keys = list(first.meta)
    if format == "diffusers":  # written part by part
        keys.sort(key=lambda k: [p for p, _ in DIFFUSERS_PARTS].index(k.partition(".")[0]))
    _write(out, format, first, _merged_tensors(sources, recipe, lora_contributions(loras), keys), written)
    return written


def _open_inputs(a, b, base, recipe: MergeRecipe) -> list[CheckpointSource]:
    wanted = {None: (), "weighted-sum": ("B",), "add-difference": ("B", "--base M")}[recipe.method]
    given = {"B": b, "--base M": base}
    for name in wanted:
        if given[name] is None:
            raise ValueError(f"{recipe.method} needs a model {name}")
    sources = [CheckpointSource(a)] + [CheckpointSource(given[name]) for name in wanted]
    expected = {k: v for k, v in LatentDiffusion.from_config(sources[0].config, device="meta").state_dict().items()}
    for source in sources:
        check_state(expected, source.meta, str(source.path))
    return sources


def _merged_tensors(sources: list[CheckpointSource], recipe: MergeRecipe, contributions: dict, keys: list[str]
                    ) -> Iterator[tuple[str, torch.Tensor]]:
    """(our key, merged tensor) in the order of ``keys``, one at a time."""
    first, alpha = sources[0], recipe.alpha
    for key in keys:
        a = first.get(key)
        if len(sources) > 1 and a.is_floating_point():
            if recipe.method == "weighted-sum" and alpha in (0, 1):
                a = a if alpha == 0 else sources[1].get(key).to(a.dtype)  # exactly A or B, no rounding
            elif recipe.method == "weighted-sum":
                a = (a.float() * (1 - alpha) + sources[1].get(key).float() * alpha).to(a.dtype)
            else:
                a = (a.float() + (sources[1].get(key).float() - sources[2].get(key).float()) * alpha).to(a.dtype)
        pairs = contributions.get(key.removesuffix(".weight")) if key.endswith(".weight") else None
        yield key, merged_weight(a, pairs) if pairs else a


def _recipe_metadata(recipe: MergeRecipe, sources: list[CheckpointSource]) -> dict:
    names = ("primary_model", "secondary_model", "tertiary_model")
    return {"type": "nanoldm", "interp_method": _A1111_METHOD[recipe.method], "multiplier": recipe.alpha,
            **{name: s.path.name for name, s in zip(names, sources)},
            "loras": [{"name": Path(p).stem, "weight": w, "hash": lora_hash(p)} for p, w in recipe.loras]}


def _write(out: Path, format: str, first: CheckpointSource, tensors, recipe: dict) -> None:
    config = first.config
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), ADDED_TOKENS_KEY: json.dumps(first.added_tokens),
                RECIPE_KEY: json.dumps(recipe)}
    if format == "nanoldm":
        specs = {k: (m.dtype, tuple(m.shape)) for k, m in first.meta.items()}
        write_safetensors_streamed(out, specs, tensors, metadata)
    elif format == "sd":
        table = keymap.sd_table(config)
        specs = {table[k]: (m.dtype, tuple(keymap.linear_to_conv1x1(m).shape) if _is_vae_attention(k)
                            else tuple(m.shape)) for k, m in first.meta.items()}
        renamed = ((table[k], keymap.linear_to_conv1x1(t) if _is_vae_attention(k) else t) for k, t in tensors)
        write_safetensors_streamed(out, specs, renamed, {**metadata, LAYOUT_KEY: "sd"})
    else:
        _write_diffusers(out, first, tensors, recipe)


def _write_diffusers(folder: Path, first: CheckpointSource, tensors, recipe: dict) -> None:
    """Three streamed weight files, then the configs, assembled beside ``folder`` and renamed into place."""
    parts = keymap.ours_to_diffusers(first.meta, first.config)  # part -> {diffusers key: meta}, in A's order
    with atomic_folder(folder) as tmp:
        stream = iter(tensors)
        for part, stem in DIFFUSERS_PARTS:
            specs = {k: (m.dtype, tuple(m.shape)) for k, m in parts[part].items()}
            own = ((name, t) for name, (_, t) in zip(specs, itertools.islice(stream, len(specs))))
            write_safetensors_streamed(tmp / part / f"{stem}.safetensors", specs, own,
                                       {"format": "pt", RECIPE_KEY: json.dumps(recipe)})
        tokenizer = CLIPTokenizer.default()
        if first.added_tokens:
            tokenizer.add_tokens(first.added_tokens)
        write_diffusers_configs(first.config, tokenizer, tmp)


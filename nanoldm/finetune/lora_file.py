"""LoRA files: read every SD 1.x layout in circulation into one form, write kohya's or diffusers' (PEFT).

One adapted layer is a :class:`LoraModule`: the low-rank factors ``down`` (r, in[, k, k]) and ``up``
(out, r[, 1, 1]) and ``alpha``; the layer's weight becomes ``W + w * (alpha / r) * up @ down`` (Hu et al.,
"LoRA", 2021, eq. 3; kohya's alpha scaling). A file is :data:`LoraWeights`: our module path -> module. The key
names of each layout live in :mod:`nanoldm.checkpoint.keymap_lora`.

Reading checks what can be checked without a model: every key is a LoRA factor, every layer has both factors of
agreeing rank, every name names a layer of the model family the file is for (an SDXL or SD 2.x file says so).
Shapes against a model's weights are checked when the LoRA is applied (:mod:`nanoldm.finetune.lora`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from nanoldm.checkpoint import keymap_lora as km
from nanoldm.checkpoint.formats import CheckpointError, read_tensors, write_safetensors
from nanoldm.checkpoint.hashing import safetensors_data_offset, sha256_file
from nanoldm.config import SD_V1, ModelConfig

__all__ = ["LoraModule", "LoraWeights", "LoraError", "read_lora", "save_lora", "lora_delta", "lora_hash", "FORMATS"]

FORMATS = ("kohya", "diffusers")


class LoraError(CheckpointError):
    """A LoRA file that cannot be used (with this model); the message names the file and the first bad key."""


@dataclass(frozen=True)
class LoraModule:
    """One adapted layer. Shapes: down (r, in) linear, (r, in, 1, 1) 1x1 conv, (r, in, k, k) LoCon conv;
    up (out, r) or (out, r, 1, 1). ``alpha`` None means alpha = r (scale 1)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


LoraWeights = dict[str, LoraModule]
"""Our module path (``unet.<...>.to_q``, ``text_encoder.<...>.q_proj``) -> its LoRA."""


def lora_delta(module: LoraModule, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``scale * up @ down`` in float32, shaped like the weight it adds to (``shape``).

    Shapes: up (out, r[, 1, 1]) @ down (r, in[, k, k]) -> (out, in[, k, k]); a 1x1 conv LoRA on a linear
    weight (or the reverse) is reshaped, as the two are the same map."""
    up = module.up.float().flatten(1)  # (out, r)
    down = module.down.float().flatten(1)  # (r, in * k * k)
    delta = (up @ down).reshape(up.shape[0], *module.down.shape[1:]) * module.scale
    if delta.shape != tuple(shape) and delta.numel() == math.prod(shape) and delta.shape[:2] == tuple(shape[:2]):
        delta = delta.reshape(shape)  # (out, in, 1, 1) <-> (out, in)
    return delta


def read_lora(path: str | Path, config: ModelConfig | None = None) -> tuple[LoraWeights, dict[str, str]]:
    """The LoRA in ``path`` (kohya or diffusers layout) as our module paths, and the file's metadata.

    ``config``: the model the names are resolved against (kohya's CompVis spelling depends on the topology);
    None: SD 1.x. Raises :class:`LoraError` naming the file and the first key that does not fit."""
    path = Path(path)
    tensors, metadata = read_tensors(path)
    config = config or SD_V1
    if not tensors:
        raise LoraError(f"{path}: holds no tensors, so it is not a LoRA")
    family = km.family_from_metadata(metadata) or km.family_from_keys(tensors)
    if family:
        raise LoraError(f"{path}: a LoRA for {family} models; this model is SD 1.x-shaped")
    parts = _group(path, tensors)
    _check_context_width(path, parts, config)
    table = km.kohya_table(config)
    weights: LoraWeights = {}
    for (layout, name), factors in parts.items():
        ours = table.get(name) if layout == "kohya" else km.peft_to_ours(name)
        if ours is None:
            raise LoraError(f"{path}: key {name + km.KOHYA_DOWN!r} names no layer of this model")
        weights[ours] = _module(path, name, factors)
    return weights, metadata


def _group(path: Path, tensors: dict[str, torch.Tensor]) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    """Keys -> {(layout, module name): {DOWN, UP, ALPHA: tensor}}; an unknown key is an error."""
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key in sorted(tensors):
        split = km.split_key(key)
        if split is None:
            raise LoraError(f"{path}: key {key!r} is not a LoRA factor of a known layout (kohya's lora_unet_/"
                            f"lora_te_ ... .lora_down.weight, or diffusers' unet./text_encoder. ... .lora_A.weight)")
        layout, name, role = split
        parts.setdefault((layout, name), {})[role] = tensors[key]
    return parts


def _module(path: Path, name: str, factors: dict[str, torch.Tensor]) -> LoraModule:
    if km.DOWN not in factors or km.UP not in factors:
        missing = "down" if km.DOWN not in factors else "up"
        raise LoraError(f"{path}: layer {name!r} has no {missing} factor")
    down, up = factors[km.DOWN], factors[km.UP]
    if down.ndim not in (2, 4) or up.ndim != down.ndim or up.shape[1] != down.shape[0] or up.shape[2:] not in (
            (), (1, 1)):
        raise LoraError(f"{path}: layer {name!r} has factors of shapes down {tuple(down.shape)} and up "
                        f"{tuple(up.shape)}, which do not multiply")
    alpha = factors.get(km.ALPHA)
    if alpha is not None and (alpha.numel() != 1 or not math.isfinite(float(alpha))):
        raise LoraError(f"{path}: layer {name!r} has an alpha that is not one finite number")
    return LoraModule(down=down, up=up, alpha=None if alpha is None else float(alpha))


def _check_context_width(path: Path, parts: dict, config: ModelConfig) -> None:
    """A cross-attention key/value LoRA whose input width is another family's context width names that family."""
    for (_, name), factors in parts.items():
        if km.is_cross_attention_key(name) and km.DOWN in factors:
            width = factors[km.DOWN].shape[1]
            family = km.FAMILY_CONTEXT_WIDTH.get(width)
            if family and width != config.unet.context_dim:
                raise LoraError(f"{path}: a LoRA for {family} models (its cross-attention takes {width}-wide "
                                f"text, this model's {config.unet.context_dim}-wide)")


def save_lora(path: str | Path, weights: LoraWeights, metadata: dict[str, str] | None = None,
              format: str = "kohya") -> None:
    """Write ``weights`` atomically as ``.safetensors`` in kohya's layout (``lora_unet_...lora_down.weight``,
    ``.alpha``) or diffusers' PEFT layout (``unet....lora_A.weight``; PEFT files carry no alpha, so its scale is
    folded into ``lora_B``, which loads the same in diffusers and here)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path}: a LoRA is written as .safetensors")
    if format not in FORMATS:
        raise ValueError(f"unknown LoRA format {format!r}; choose one of {', '.join(FORMATS)}")
    if not weights:
        raise ValueError("no LoRA layers to save")
    tensors: dict[str, torch.Tensor] = {}
    for ours, m in weights.items():
        if format == "kohya":
            name = km.ours_to_kohya(ours)
            tensors[name + km.KOHYA_DOWN], tensors[name + km.KOHYA_UP] = m.down, m.up
            if m.alpha is not None:
                tensors[name + km.KOHYA_ALPHA] = torch.tensor(float(m.alpha), dtype=torch.float32)
        else:
            name = km.ours_to_peft(ours)
            up = m.up if m.alpha is None else (m.up.float() * m.scale).to(m.up.dtype)
            tensors[name + km.PEFT_DOWN], tensors[name + km.PEFT_UP] = m.down, up
    write_safetensors(path, tensors, {str(k): str(v) for k, v in (metadata or {}).items()})


def lora_hash(path: str | Path, metadata: dict[str, str] | None = None) -> str:
    """A1111's short LoRA hash (``Lora hashes`` in the infotext): the first 12 hex digits of kohya's
    ``sshs_model_hash`` metadata if present, else of the SHA-256 of a ``.safetensors`` file's tensor data (the
    bytes after its JSON header: sd-scripts' "addnet" hash), or of the whole file for other suffixes."""
    if metadata and metadata.get("sshs_model_hash"):
        return metadata["sshs_model_hash"][:12]
    start = safetensors_data_offset(path) if Path(path).suffix.lower() == ".safetensors" else 0
    return sha256_file(path, start=start)[:12]

"""Applying LoRAs: their products merged into the weights, and the original weights put back bitwise.

For a layer with weight W and LoRAs i at multipliers w_i (a text-encoder multiplier for ``text_encoder.``
layers, a UNet multiplier for ``unet.`` layers, as A1111's ``<lora:name:te_w:unet_w>``):

    W' = W + sum_i w_i * (alpha_i / r_i) * up_i @ down_i        (summed in float32, cast to W's dtype once)

Merging costs nothing per sampling step. :class:`LoraStack` keeps a copy of every weight it changed and puts
it back (bitwise) before it applies another set, or on :meth:`LoraStack.restore`. Everything is checked before
any weight changes: a layer the model does not have, or factors whose product does not fit the weight, is a
:class:`LoraError` naming the first such layer, and the model is left as it was. A multiplier of 0 leaves the
weights untouched, so it equals no LoRA bitwise.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nanoldm.finetune.lora_file import LoraError, LoraModule, LoraWeights, lora_delta

__all__ = ["ActiveLora", "LoraStack", "lora_contributions", "merged_weight", "check_fits"]

PARTS = ("unet", "text_encoder")


@dataclass(frozen=True)
class ActiveLora:
    """One LoRA at its multipliers. ``name`` is what errors and the infotext call it."""

    name: str
    weights: LoraWeights
    te: float = 1.0
    unet: float = 1.0

    def multiplier(self, path: str) -> float:
        return self.te if path.startswith("text_encoder.") else self.unet


def lora_contributions(loras: Sequence[ActiveLora]) -> dict[str, list[tuple[LoraModule, float]]]:
    """Our module path -> the (module, multiplier) pairs that change it, multipliers of 0 left out."""
    out: dict[str, list[tuple[LoraModule, float]]] = {}
    for lora in loras:
        for path, module in lora.weights.items():
            w = lora.multiplier(path)
            if w != 0:
                out.setdefault(path, []).append((module, w))
    return out


def merged_weight(weight: torch.Tensor, contributions: Sequence[tuple[LoraModule, float]]) -> torch.Tensor:
    """``weight + sum w * delta``, summed in float32 and cast to the weight's dtype. Shapes: like ``weight``."""
    total = weight.detach().float()
    for module, w in contributions:
        total = total + w * lora_delta(module, weight.shape).to(weight.device)
    return total.to(weight.dtype)


def check_fits(name: str, path: str, module: LoraModule, shape: torch.Size | tuple[int, ...] | None) -> None:
    """A :class:`LoraError` unless ``module``'s product has the shape of the weight (``shape``; None: no such layer)."""
    if shape is None:
        raise LoraError(f"LoRA {name!r}: layer {path!r} is not a layer of this model")
    product = (module.up.shape[0], *module.down.shape[1:])
    same_map = product[:2] == tuple(shape[:2]) and math.prod(product) == math.prod(shape)
    if tuple(product) != tuple(shape) and not same_map:
        raise LoraError(f"LoRA {name!r}: layer {path!r} adds a {tuple(product)} product to a weight of shape "
                        f"{tuple(shape)}")


def _layer(parts: Mapping[str, nn.Module], path: str) -> nn.Module | None:
    part, _, rest = path.partition(".")
    if part not in parts:
        return None
    try:
        layer = parts[part].get_submodule(rest)
    except AttributeError:
        return None
    return layer if isinstance(getattr(layer, "weight", None), torch.Tensor) else None


class LoraStack:
    """The LoRAs merged into one model's weights now, and the original weights they replaced.

    ``parts``: {"unet": UNet, "text_encoder": CLIPTextEncoder} (a ``LatentDiffusion``'s ``modules()`` works)."""

    def __init__(self, parts: Mapping[str, nn.Module]):
        self.parts = {k: v for k, v in parts.items() if k in PARTS}
        self.active: tuple[ActiveLora, ...] = ()
        self._originals: dict[str, torch.Tensor] = {}  # path -> the weight as it was before any LoRA

    def apply(self, loras: Sequence[ActiveLora]) -> None:
        """Make exactly ``loras`` (in order) the merged set; a no-op when it already is. Checked first, whole:
        on an error nothing changes."""
        loras = tuple(loras)
        if _same(loras, self.active):
            return
        contributions = lora_contributions(loras)
        layers = {path: _layer(self.parts, path) for lora in loras for path in lora.weights}
        for lora in loras:
            for path, module in lora.weights.items():
                layer = layers[path]
                check_fits(lora.name, path, module, None if layer is None else layer.weight.shape)
        self.restore()
        with torch.no_grad():
            for path, pairs in contributions.items():
                weight = layers[path].weight
                self._originals[path] = weight.detach().clone()
                weight.copy_(merged_weight(weight, pairs))
        self.active = loras

    def restore(self) -> None:
        """Put back every weight a LoRA changed, bitwise, and forget the merged set."""
        with torch.no_grad():
            for path, original in self._originals.items():
                _layer(self.parts, path).weight.copy_(original)
        self._originals, self.active = {}, ()


def _same(a: tuple[ActiveLora, ...], b: tuple[ActiveLora, ...]) -> bool:
    """Equal sets: the same files' weights (by identity) at the same multipliers, in the same order."""
    return len(a) == len(b) and all(x.weights is y.weights and (x.te, x.unet) == (y.te, y.unet) for x, y in zip(a, b))

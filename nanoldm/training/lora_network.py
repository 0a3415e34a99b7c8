"""LoRA adapters for training (Hu et al. 2021), placed where kohya's ``sd-scripts`` (``networks/lora.py``) puts them.

A frozen layer ``W`` (a Linear or a Conv2d) gains a low-rank path beside it:

    y = W x + (alpha / r) * up(down(x))

- ``down``: a layer of the same kind as ``W`` with ``r`` outputs (a Conv2d keeps ``W``'s kernel, stride and
  padding, so a 3x3 convolution gets a 3x3 ``down``: LoCon), initialised as kohya does (and Microsoft's loralib):
  ``kaiming_uniform_(a=sqrt(5))``;
- ``up``: a Linear (or 1x1 Conv2d) from ``r`` to ``W``'s outputs, initialised to **zero**, so training starts from
  the base model exactly;
- ``alpha / r`` the scale (alpha 0 or None: ``r``, scale 1); optional dropout on ``down(x)`` while training.

Where (kohya's targets, on our module paths, which are the diffusers ones):

- ``unet``: every Linear and 1x1 Conv2d inside a ``SpatialTransformer`` (kohya's ``Transformer2DModel``: proj_in,
  to_q/k/v, to_out.0, ff.net.0.proj, ff.net.2, proj_out), rank ``r``;
- ``conv_rank`` R (LoCon): also the layers inside every ``ResBlock``, ``Downsample`` and ``Upsample``
  (``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D``): the 3x3 convolutions with rank R (``conv_alpha``), the
  time-embedding Linear and 1x1 shortcut with rank ``r``;
- ``text``: every Linear of the text encoder's ``CLIPAttention`` and ``CLIPMLP`` (q/k/v/out_proj, fc1, fc2).

The adapters run as forward hooks on the frozen layers while training. The sampling fast paths
(:mod:`nanoldm.layers.fast`) read weights rather than call layers, so previews run inside :meth:`LoraNetwork.merged`:
hooks off, ``scale * up @ down`` added to the weights, the original weights put back bit for bit afterwards.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.finetune.lora_file import LoraModule, LoraWeights, lora_delta
from nanoldm.layers.resample import Downsample, Upsample
from nanoldm.layers.resnet import ResBlock
from nanoldm.model import LatentDiffusion
from nanoldm.text.clip import CLIPAttention, CLIPMLP
from nanoldm.unet.transformer import SpatialTransformer

TARGETS = ("unet", "text")
COMPONENT = {"unet": "unet", "text": "text_encoder"}  # a target -> the LatentDiffusion network it adapts


@dataclass(frozen=True)
class LoraSpec:
    """What to adapt and how: rank and alpha of Linear / 1x1 layers, rank and alpha of 3x3 convolutions (LoCon;
    None: not adapted), the networks (``unet``, ``text``), dropout on the low-rank path while training."""
    rank: int = 8
    alpha: float | None = None  # None: rank (scale 1)
    targets: tuple[str, ...] = ("unet",)
    conv_rank: int | None = None
    conv_alpha: float | None = None
    dropout: float | None = None

    def __post_init__(self):
        for what, rank in (("rank", self.rank), ("conv rank", self.conv_rank)):
            if rank is not None and (isinstance(rank, bool) or int(rank) != rank or rank < 1):
                raise ValueError(f"the LoRA {what} must be a whole number >= 1, got {rank}")
        for what, alpha in (("alpha", self.alpha), ("conv alpha", self.conv_alpha)):
            if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
                raise ValueError(f"the LoRA {what} must be a finite number >= 0, got {alpha}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ValueError(f"unknown LoRA target {unknown[0] if unknown else '(none)'!r}; choose from "
                             + ", ".join(TARGETS))
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"the LoRA dropout must be in [0, 1), got {self.dropout}")


class LoraAdapter(nn.Module):
    """The low-rank path of one frozen layer (kohya's ``LoRAModule``). Shapes: down.weight (r, in) or
    (r, in, k, k); up.weight (out, r) or (out, r, 1, 1)."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float | None, dropout: float | None = None):
        super().__init__()
        if isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        self.down.to(base.weight.device)
        self.up.to(base.weight.device)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.rank = rank
        self.alpha = float(rank if not alpha else alpha)  # kohya: alpha None or 0 means rank
        self.scale = self.alpha / rank
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """scale * up(down(x)), the term added to the frozen layer's output. Shapes: the layer's input -> output."""
        h = self.down(x)
        if self.dropout and self.training:
            h = F.dropout(h, p=self.dropout)
        return self.up(h) * self.scale

    def hook(self, layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """A forward hook on the frozen layer: its output plus this path's."""
        return output + self(args[0]).to(output.dtype)

    def lora_module(self) -> LoraModule:
        """The trained weights as the file layer sees them (float32, CPU)."""
        return LoraModule(down=self.down.weight.detach().float().cpu().clone(),
                          up=self.up.weight.detach().float().cpu().clone(), alpha=self.alpha)


def lora_targets(model: LatentDiffusion, spec: LoraSpec) -> dict[str, tuple[nn.Module, int, float | None]]:
    """Every layer ``spec`` adapts: our module path -> (layer, rank, alpha), in module order."""
    unet_blocks: tuple[type, ...] = (SpatialTransformer,) + ((ResBlock, Downsample, Upsample) if spec.conv_rank else ())
    blocks = {"unet": unet_blocks, "text": (CLIPAttention, CLIPMLP)}
    found: dict[str, tuple[nn.Module, int, float | None]] = {}
    for target in spec.targets:
        component = COMPONENT[target]
        for name, block in getattr(model, component).named_modules():
            if not isinstance(block, blocks[target]):
                continue
            for child_name, layer in block.named_modules():
                if not isinstance(layer, (nn.Linear, nn.Conv2d)):
                    continue
                small = isinstance(layer, nn.Linear) or layer.kernel_size == (1, 1)
                rank, alpha = (spec.rank, spec.alpha) if small else (spec.conv_rank, spec.conv_alpha)
                if rank:
                    found[f"{component}.{name}.{child_name}"] = (layer, rank, alpha)
    return found


class LoraNetwork(nn.Module):
    """The adapters of one model; its parameters are the only ones that train. The adapted layers are kept in a
    plain dict (not submodules), so the network's state dict is the adapters' weights alone."""

    def __init__(self, model: LatentDiffusion, spec: LoraSpec):
        super().__init__()
        targets = lora_targets(model, spec)
        if not targets:
            raise ValueError(f"the model has no layers for LoRA targets {', '.join(spec.targets)}")
        self.spec = spec
        self.paths = list(targets)
        self.layers = {path: layer for path, (layer, _, _) in targets.items()}
        self.adapters = nn.ModuleDict({_key(path): LoraAdapter(layer, rank, alpha, spec.dropout)
                                       for path, (layer, rank, alpha) in targets.items()})
        if len(self.adapters) != len(self.paths):
            raise ValueError("two adapted layers have the same name once '.' is written '_'")
        self._hooks: list = []

    def adapter(self, path: str) -> LoraAdapter:
        return self.adapters[_key(path)]

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    def attach(self) -> None:
        """Hook every adapter onto its layer (training and plain forward passes see the LoRA)."""
        if not self._hooks:
            self._hooks = [self.layers[p].register_forward_hook(self.adapter(p).hook) for p in self.paths]

    def detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    @contextmanager
    def merged(self):
        """The LoRA merged into the frozen weights for the block (hooks off); on exit the weights are put back
        bit for bit and the hooks as they were."""
        was_attached = self.attached
        self.detach()
        saved = {p: self.layers[p].weight.detach().clone() for p in self.paths}
        try:
            with torch.no_grad():
                for p in self.paths:
                    weight = self.layers[p].weight
                    adapter = self.adapter(p)
                    live = LoraModule(down=adapter.down.weight, up=adapter.up.weight, alpha=adapter.alpha)
                    weight += lora_delta(live, weight.shape).to(weight.dtype)
            yield self
        finally:
            with torch.no_grad():
                for p in self.paths:
                    self.layers[p].weight.copy_(saved[p])
            if was_attached:
                self.attach()

    def lora_weights(self) -> LoraWeights:
        """The trained adapters keyed by our module paths (``unet.…``, ``text_encoder.…``)."""
        return {p: self.adapter(p).lora_module() for p in self.paths}


def _key(path: str) -> str:
    """A module path as a ModuleDict key (no dots), as kohya writes its names."""
    return path.replace(".", "_")

"""LoRA adapters for training (Hu et al. 2021), placed where kohya's ``sd-scripts`` (``networks/lora.py``) puts them.

A frozen layer's weight ``W`` (a Linear's or a Conv2d's) gains a low-rank update:

    W' = W + (alpha / r) * up @ down      (so y = W x + (alpha / r) * up(down(x)), kohya's LoRAModule)

- ``down`` (r, in) or (r, in, k, k): a Conv2d keeps ``W``'s kernel, so a 3x3 convolution gets a 3x3 ``down``
  (LoCon), initialised as kohya's ``lora_down`` layer is (and Microsoft's loralib): ``kaiming_uniform_(a=sqrt(5))``;
- ``up`` (out, r) or (out, r, 1, 1), initialised to **zero**, so training starts from the base model exactly;
- ``alpha / r`` the scale (alpha 0 or None: ``r``, scale 1); optional ``rank_dropout`` while training.

Where (kohya's targets, on our module paths, which are the diffusers ones):

- ``unet``: every Linear and 1x1 Conv2d inside a ``SpatialTransformer`` (kohya's ``Transformer2DModel``: proj_in,
  to_q/k/v, to_out.0, ff.net.0.proj, ff.net.2, proj_out), rank ``r``;
- ``conv_rank`` R (LoCon): also the layers inside every ``ResBlock``, ``Downsample`` and ``Upsample``
  (``ResnetBlock2D``, ``Downsample2D``, ``Upsample2D``): the 3x3 convolutions with rank R (``conv_alpha``), the
  time-embedding Linear and 1x1 shortcut with rank ``r``;
- ``text``: every Linear of the text encoder's ``CLIPAttention`` and ``CLIPMLP`` (q/k/v/out_proj, fc1, fc2).

The adapters are weight parametrizations (``torch.nn.utils.parametrize``) of the frozen layers while attached:
every reader of a weight sees ``W'``, the plain layers as well as the code that reads weights directly (the 1x1
projections of a SpatialTransformer, the sampling fast paths of :mod:`nanoldm.layers.fast`), so training and the
preview grids draw the same function. :meth:`LoraNetwork.detach` gives each layer its own weight back, bit for bit.
Gradients reach only ``down`` and ``up``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

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
    rank_dropout: float | None = None

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
        if self.rank_dropout is not None and not 0 <= self.rank_dropout < 1:
            raise ValueError(f"the LoRA rank dropout must be in [0, 1), got {self.rank_dropout}")


class LoraAdapter(nn.Module):
    """The low-rank update of one frozen layer, as a parametrization of its weight: W -> W + scale * up @ down.
    Shapes: down (r, in) or (r, in, k, k); up (out, r) or (out, r, 1, 1)."""

    def __init__(self, base: nn.Linear | nn.Conv2d, rank: int, alpha: float | None, rank_dropout: float | None = None):
        super().__init__()
        out_features, in_shape = base.weight.shape[0], base.weight.shape[1:]
        one_by_one = (1, 1) if base.weight.ndim == 4 else ()
        kwargs = {"device": base.weight.device, "dtype": torch.float32}
        self.down = nn.Parameter(torch.empty(rank, *in_shape, **kwargs))
        self.up = nn.Parameter(torch.zeros(out_features, rank, *one_by_one, **kwargs))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))  # as nn.Linear / nn.Conv2d initialise kohya's lora_down
        self.rank = rank
        self.alpha = float(rank if not alpha else alpha)  # kohya: alpha None or 0 means rank
        self.scale = self.alpha / rank
        self.rank_dropout = rank_dropout

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The adapted weight. While training with ``rank_dropout`` p, each rank channel is dropped with
        probability p (the rest scaled by 1 / (1 - p)), one draw per step. Shapes: W -> W."""
        down = self.down
        if self.rank_dropout and self.training:
            keep = (torch.rand(self.rank, device=down.device) >= self.rank_dropout).to(down.dtype)
            down = down * (keep / (1 - self.rank_dropout)).reshape(-1, *[1] * (down.ndim - 1))
        live = LoraModule(down=down, up=self.up, alpha=self.alpha)
        return weight + lora_delta(live, weight.shape).to(weight.dtype)

    def lora_module(self) -> LoraModule:
        """The trained weights as the file layer sees them (float32, CPU)."""
        return LoraModule(down=self.down.detach().float().cpu().clone(), up=self.up.detach().float().cpu().clone(),
                          alpha=self.alpha)


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
        self.adapters = nn.ModuleDict({_key(path): LoraAdapter(layer, rank, alpha, spec.rank_dropout)
                                       for path, (layer, rank, alpha) in targets.items()})
        if len(self.adapters) != len(self.paths):
            raise ValueError("two adapted layers have the same name once '.' is written '_'")
        self._attached = False

    def adapter(self, path: str) -> LoraAdapter:
        return self.adapters[_key(path)]

    @property
    def attached(self) -> bool:
        return self._attached

    def attach(self) -> None:
        """Put every adapter on its layer's weight: every reader of the weight (plain calls, the sampling fast
        paths) sees W + scale * up @ down."""
        if not self._attached:
            for p in self.paths:
                parametrize.register_parametrization(self.layers[p], "weight", self.adapter(p), unsafe=True)
            self._attached = True

    def detach(self) -> None:
        """Give every layer its own weight back, bit for bit."""
        if self._attached:
            for p in self.paths:
                parametrize.remove_parametrizations(self.layers[p], "weight", leave_parametrized=False)
            self._attached = False

    def lora_weights(self) -> LoraWeights:
        """The trained adapters keyed by our module paths (``unet.…``, ``text_encoder.…``)."""
        return {p: self.adapter(p).lora_module() for p in self.paths}


def _key(path: str) -> str:
    """A module path as a ModuleDict key (no dots), as kohya writes its names."""
    return path.replace(".", "_")

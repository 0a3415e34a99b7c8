"""A small CLIP (Radford et al. 2021): an image tower and a text tower mapped into one embedding space,
trained so that an image scores highest against its own caption.

- text tower: our :class:`~nanoldm.text.clip.CLIPTextEncoder` (the same network SD conditions on), pooled
  at the EOS token as CLIP does, then a linear ``text_projection`` without bias;
- image tower: a small ConvNet for 32x32 (or 64x64) images, ``ImageEncoder``: strided conv blocks down to a
  4x4 map that is flattened (not averaged: positions and relations are part of a shapes caption), then a
  linear ``image_projection``;
- a learned temperature ``logit_scale`` = log(1 / tau), initialised at tau = 0.07 and clamped at 100 as in
  the paper, and the symmetric contrastive loss (the paper's figure 3).

Its file (weights and :class:`CLIPConfig`) is written and read by :mod:`nanoldm.checkpoint.parts`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.config import SHAPES_TINY, TextEncoderConfig
from nanoldm.text.clip import CLIPTextEncoder

MAX_LOGIT_SCALE = math.log(100.0)
GRID = 4  # the image tower's final feature map is GRID x GRID


@dataclass(frozen=True)
class CLIPConfig:
    """Both towers and the shared embedding. ``image_channels``: one strided conv block per entry."""
    text: TextEncoderConfig = field(default_factory=lambda: SHAPES_TINY.text)
    embed_dim: int = 128
    image_size: int = 32
    image_channels: tuple[int, ...] = (32, 64, 128)
    init_temperature: float = 0.07

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CLIPConfig:
        d = json.loads(text)
        return cls(text=TextEncoderConfig(**d.pop("text")), image_channels=tuple(d.pop("image_channels")), **d)


class ConvBlock(nn.Module):
    """conv 3x3 stride 2 -> GroupNorm -> SiLU -> conv 3x3 -> GroupNorm -> SiLU; halves H and W."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(8, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""
        x = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(x)))


class ImageEncoder(nn.Module):
    """A ConvNet from an image in [-1, 1] to one feature vector of ``channels[-1] * GRID**2`` values."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip((channels[0],) + channels[:-1], channels))
        self.out_dim = channels[-1] * GRID * GRID

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 3, H, W) -> (B, channels[-1] * GRID * GRID)."""
        x = F.silu(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return F.adaptive_avg_pool2d(x, GRID).flatten(1)  # (B, C * GRID * GRID)


class CLIP(nn.Module):
    """``encode_image``, ``encode_text`` (unit vectors), ``logits`` and ``loss``; see the module docstring."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = ImageEncoder(cfg.image_channels)
        self.image_projection = nn.Linear(self.visual.out_dim, cfg.embed_dim, bias=False)
        self.text_model = CLIPTextEncoder(cfg.text)
        self.text_projection = nn.Linear(cfg.text.width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings. Shapes: (B, 3, H, W) -> (B, embed_dim)."""
        return F.normalize(self.image_projection(self.visual(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
        """L2-normalised text embeddings from the hidden state at each row's first EOS token. Padding after
        it is cut off (the tower is causal, so it changes nothing). Shapes: (B, L) -> (B, embed_dim)."""
        is_eos = input_ids == eos_id
        if not is_eos.any(1).all():
            raise ValueError("every token row needs an EOS token (tokenize with the CLIP tokenizer)")
        eos = is_eos.int().argmax(1)  # (B,) first EOS
        hidden = self.text_model(input_ids[:, : int(eos.max()) + 1])  # (B, L', width)
        pooled = hidden[torch.arange(len(input_ids), device=hidden.device), eos]  # (B, width)
        return F.normalize(self.text_projection(pooled), dim=-1)

    def logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities. Shapes: (N, D), (M, D) -> (N, M)."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * image_emb @ text_emb.T

    def loss(self, images: torch.Tensor, input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
        """Symmetric cross-entropy over the batch's image-text similarity matrix; pair i is the i-th image
        with the i-th caption. Shapes: (B, 3, H, W), (B, L) -> scalar."""
        logits = self.logits(self.encode_image(images), self.encode_text(input_ids, eos_id))  # (B, B)
        labels = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


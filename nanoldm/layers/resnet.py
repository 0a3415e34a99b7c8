"""Residual block: GroupNorm -> SiLU -> conv, twice, with an optional timestep embedding in between."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.layers.conv import Conv2d
from nanoldm.layers.frozen import frozen_block


class ResBlock(nn.Module):
    """ResNet block of DDPM (Ho et al. 2020), as used by SD's UNet (``emb_dim`` set) and VAE (``emb_dim=None``)."""

    def __init__(self, in_ch: int, out_ch: int, *, emb_dim: int | None, norm_groups: int, eps: float,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, in_ch, eps=eps)
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm2 = nn.GroupNorm(norm_groups, out_ch, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: x (B, in_ch, H, W), emb (B or 1, emb_dim) -> (B, out_ch, H, W)."""
        if (fast := frozen_block()) is not None:
            return fast.resblock(self, x, emb)
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]  # (B or 1, out_ch, 1, 1) broadcast
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h

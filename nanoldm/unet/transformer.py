"""SpatialTransformer: the UNet's attention block (Rombach et al. 2022, "High-Resolution Image Synthesis
with Latent Diffusion Models", sec. 3.3). Queries come from the latent's pixels; the cross-attention's
keys and values come from the conditioning sequence (text tokens, class, layout, ...)."""
from __future__ import annotations

import torch
import torch.utils.checkpoint
import torch.nn.functional as F
from torch import nn

from nanoldm.layers.attention import Attention
from nanoldm.layers.frozen import frozen_block


class GEGLU(nn.Module):
    """Gated GELU (Shazeer 2020): one projection to 2x width, half gates the other half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, N, dim_in) -> (B, N, dim_out)."""
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        if (fast := frozen_block()) is not None:
            return fast.geglu(hidden, gate)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention, GEGLU feed-forward; each with a residual."""

    def __init__(self, dim: int, *, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads=heads, head_dim=head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim=context_dim, heads=heads, head_dim=head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Shapes: x (B, N, dim), context (B, M, context_dim) -> (B, N, dim)."""
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """GroupNorm -> proj_in -> ``depth`` transformer blocks over the H*W tokens -> proj_out, plus a residual.

    ``linear_projection`` selects SD 2's Linear proj_in/proj_out instead of SD 1's 1x1 convs.
    """

    def __init__(self, channels: int, *, heads: int, depth: int, context_dim: int, norm_groups: int,
                 linear_projection: bool):
        super().__init__()
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        proj = (lambda: nn.Linear(channels, channels)) if linear_projection else (lambda: nn.Conv2d(channels, channels, 1))
        self.proj_in = proj()
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads=heads, head_dim=channels // heads, context_dim=context_dim)
            for _ in range(depth)
        )
        self.proj_out = proj()
        self.checkpointing = False  # gradient checkpointing of the transformer blocks (training only)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Shapes: x (B, C, H, W), context (B, M, context_dim) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self._project(self.proj_in, self.norm(x).flatten(2).transpose(1, 2))  # (B, HW, C)
        for block in self.transformer_blocks:
            if self.checkpointing and self.training:
                h = torch.utils.checkpoint.checkpoint(block, h, context, use_reentrant=False)
            else:
                h = block(h, context)
        return x + self._project(self.proj_out, h).transpose(1, 2).reshape(B, C, H, W)

    def _project(self, proj: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        """proj_in / proj_out on tokens (B, HW, C) -> (B, HW, C). A 1x1 conv is the same map as a Linear with its
        weight (C, C, 1, 1) read as (C, C); applied on the tokens it saves two layout copies per projection."""
        if self.linear_projection:
            return proj(tokens)
        return F.linear(tokens, proj.weight.flatten(1), proj.bias)

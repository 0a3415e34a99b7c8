"""Multi-head attention: one ``scaled_dot_product_attention`` call for self- and cross-attention.

Queries come from ``x``; keys and values come from ``context`` (cross-attention) or from ``x``
itself (self-attention). Names follow the checkpoints: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.layers.attention_record import recorder_for
from nanoldm.layers.frozen import frozen_block


class Attention(nn.Module):
    """Scaled dot-product attention (Vaswani et al. 2017) with separate Q/K/V projections.

    ``context_hook`` (optional) maps the context before the K and V projections; hypernetworks
    plug in there: ``k = to_k(hk(context))``, ``v = to_v(hv(context))``. Inside a ``frozen_weights()`` block a
    layer without a hook hands its call to :meth:`~nanoldm.layers.fast.FrozenBlock.attention`. A layer watched by
    :func:`~nanoldm.layers.attention_record.recording_attention` hands its softmax to the recorder.
    """

    def __init__(self, query_dim: int, *, context_dim: int | None = None, heads: int, head_dim: int,
                 qkv_bias: bool = False):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, inner, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])
        self.context_hook = None  # callable(context) -> (context_for_k, context_for_v)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim)."""
        if self.context_hook is None and (fast := frozen_block()) is not None:
            return fast.attention(self, x, context)
        context = x if context is None else context
        ctx_k, ctx_v = (context, context) if self.context_hook is None else self.context_hook(context)
        return self.attend(self.to_q(x), self.to_k(ctx_k), self.to_v(ctx_v), x.shape[:2])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch_tokens: tuple[int, int]) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v in each head, then the output projection back to (B, N) = ``batch_tokens``.

        Shapes: q (B', N', h*d), k and v (B', M, h*d), B' N' = B N -> (B, N, query_dim)."""
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B', h, N'|M, d)
        if (recorder := recorder_for(self)) is not None:  # "See inside": the same output, probabilities recorded
            out = recorder.attend(q, k, v, self, batch_tokens)  # (B', h, N', d)
        else:
            out = F.scaled_dot_product_attention(q, k, v)  # (B', h, N', d)
        out = out.transpose(1, 2).reshape(*batch_tokens, -1)  # (B, N, h*d)
        return self.to_out[0](out)


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual (the VAE's mid block)."""

    def __init__(self, channels: int, *, norm_groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: x (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = (proj(h).unsqueeze(1) for proj in (self.to_q, self.to_k, self.to_v))  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, HW, C)
        h = self.to_out[0](h).transpose(1, 2).reshape(B, C, H, W)
        return x + h

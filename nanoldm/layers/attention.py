"""Multi-head attention: one ``scaled_dot_product_attention`` call for self- and cross-attention.

Queries come from ``x``; keys and values come from ``context`` (cross-attention) or from ``x``
itself (self-attention). Names follow the checkpoints: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Scaled dot-product attention (Vaswani et al. 2017) with separate Q/K/V projections.

    ``context_hook`` (optional) maps the context before the K and V projections; hypernetworks
    plug in there: ``k = to_k(hk(context))``, ``v = to_v(hv(context))``.

    In cross-attention at inference the context (the prompt) is the same at every sampling step, so its keys and
    values are kept and reused while the context tensor, its version and the K/V weights are unchanged and no
    hook is set (``_kv_key``); with gradients on nothing is kept.
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
        self._kv: tuple | None = None  # (context, key, k, v) of the last cross-attention context, see _kv_key

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim)."""
        if context is not None and self.context_hook is None and not torch.is_grad_enabled():
            key = self._kv_key(context)
            if self._kv is None or self._kv[0] is not context or self._kv[1] != key:
                self._kv = (context, key, self.to_k(context), self.to_v(context))  # holding context keeps its id
            q, k, v = self.to_q(x), self._kv[2], self._kv[3]
        else:
            context = x if context is None else context
            ctx_k = ctx_v = context
            if self.context_hook is not None:
                ctx_k, ctx_v = self.context_hook(context)
            q, k, v = self.to_q(x), self.to_k(ctx_k), self.to_v(ctx_v)
        B, N, _ = q.shape
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, h, N|M, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, -1)  # (B, N, h*d)
        return self.to_out[0](out)


    def _kv_key(self, context: torch.Tensor) -> tuple:
        """What cached keys and values depend on besides the context tensor's identity: its in-place version and
        the K/V weights (their versions, bumped by load_state_dict or an optimizer step, and storage)."""
        params = [p for m in (self.to_k, self.to_v) for p in m.parameters()]
        return (context._version, *(p._version for p in params), *(p.data_ptr() for p in params))


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

"""Multi-head attention: one ``scaled_dot_product_attention`` call for self- and cross-attention.

Queries come from ``x``; keys and values come from ``context`` (cross-attention) or from ``x``
itself (self-attention). Names follow the checkpoints: ``to_q``, ``to_k``, ``to_v``, ``to_out.0``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.layers.frozen import frozen_block


class Attention(nn.Module):
    """Scaled dot-product attention (Vaswani et al. 2017) with separate Q/K/V projections.

    ``context_hook`` (optional) maps the context before the K and V projections; hypernetworks
    plug in there: ``k = to_k(hk(context))``, ``v = to_v(hv(context))``.

    Inside a ``frozen_weights()`` block (sampling) the context (the prompt) is the same at every step, so its keys
    and values are kept and reused while the context tensor and its version are unchanged and no hook is set; the
    next block computes them afresh. A batch usually repeats each context (a prompt's images; the negative
    prompt's half of a guided batch): keys and values are then computed once per run of equal consecutive
    contexts, and the run's images attend as one longer query sequence (a view of the batch; each query's softmax
    is the same, so the result equals the per-image one up to float rounding).
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
        self._kv: tuple | None = None  # (context, key, k, v, run) of the last cross-attention context
        # Self-attention in a frozen block: Q, K and V from one matmul on the concatenated weights, kept in _qkv. It
        # pays where the projections are small (the tiny UNet: 3% a step); at SD's widths it gains nothing and the
        # copy would cost 150 MB, hence the bound.
        self._fuse_qkv = context_dim == query_dim and inner <= 512
        self._qkv: tuple | None = None  # (frozen block, weight, bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim)."""
        B, N, _ = x.shape
        block = frozen_block() if self.context_hook is None else None  # may kept tensors stand in?
        if block is not None and context is not None:
            k, v, run = self._cached_kv(context, block)  # (B / run, M, h*d) twice
            q = self.to_q(x).reshape(B // run, run * N, -1)  # a run's queries side by side: (B / run, run*N, h*d)
        elif block is not None and self._fuse_qkv:
            q, k, v = F.linear(x, *self._fused_qkv(block)).chunk(3, dim=-1)  # one matmul for the three projections
        else:
            context = x if context is None else context
            ctx_k = ctx_v = context
            if self.context_hook is not None:
                ctx_k, ctx_v = self.context_hook(context)
            q, k, v = self.to_q(x), self.to_k(ctx_k), self.to_v(ctx_v)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B', h, N'|M, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B', h, N', d)
        out = out.transpose(1, 2).reshape(B, N, -1)  # (B, N, h*d)
        return self.to_out[0](out)

    def _cached_kv(self, context: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Keys and values of the distinct contexts, and the length of the runs of equal consecutive contexts
        (1 where the runs are not all equally long). Computed again for another context tensor, one changed in
        place, or in another frozen block."""
        key = (block, context._version)
        if self._kv is None or self._kv[0] is not context or self._kv[1] != key:
            run = _run_length(context)
            distinct = context[::run]
            self._kv = (context, key, self.to_k(distinct), self.to_v(distinct), run)  # holding context keeps its id
        return self._kv[2], self._kv[3], self._kv[4]

    def _fused_qkv(self, block: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The Q, K, V weights (and biases) stacked: (3 * h*d, query_dim), built once per frozen block."""
        if self._qkv is None or self._qkv[0] != block:
            projections = (self.to_q, self.to_k, self.to_v)
            bias = None if self.to_q.bias is None else torch.cat([p.bias for p in projections])
            self._qkv = (block, torch.cat([p.weight for p in projections]), bias)
        return self._qkv[1], self._qkv[2]


def _run_length(context: torch.Tensor) -> int:
    """g where the batch is runs of g equal consecutive items (B/g distinct ones, each repeated g times), else 1.

    Shapes: context (B, ...)."""
    B = context.shape[0]
    starts = [0] + [i + 1 for i, same in enumerate((context[1:] == context[:-1]).flatten(1).all(1).tolist())
                    if not same] + [B]
    lengths = {b - a for a, b in zip(starts, starts[1:])}
    return lengths.pop() if len(lengths) == 1 else 1


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

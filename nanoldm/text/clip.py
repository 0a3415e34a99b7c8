"""CLIP's text tower (Radford et al. 2021): token + position embeddings, a causal pre-norm transformer with
quick-GELU MLPs, and a final layer norm. Stable Diffusion 1.x conditions on its hidden states.

Module names match transformers' ``CLIPTextModel`` without its ``text_model.`` prefix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.config import TextEncoderConfig

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
}


class CLIPAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention. Shapes: (B, L, width) -> (B, L, width)."""
        B, L, _ = x.shape
        q, k, v = (p(x).unflatten(-1, (self.heads, -1)).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, L, d)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, -1))


class CLIPMLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown text encoder activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        self.act = ACTIVATIONS[activation]
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPLayer(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = CLIPAttention(cfg.width, cfg.heads)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg.width, cfg.mlp_dim, cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, L) -> (B, L, width)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPLayer(cfg) for _ in range(cfg.layers))


class CLIPTextEncoder(nn.Module):
    """``encoder(input_ids, clip_skip=1) -> (B, L, width)`` hidden states for cross-attention."""

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = CLIPEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, *, clip_skip: int = 1, final_norm: bool = True) -> torch.Tensor:
        """Hidden states after the last ``layers - (clip_skip - 1)`` layers, then the final layer norm.

        ``clip_skip=1`` is the last layer (SD 1.x); ``clip_skip=2`` is the penultimate one with the final
        layer norm applied, as A1111's "Clip skip: 2" does. Shapes: (B, L) -> (B, L, width).
        """
        if not 1 <= clip_skip <= self.cfg.layers:
            raise ValueError(f"clip_skip must be in [1, {self.cfg.layers}], got {clip_skip}")
        if input_ids.shape[1] > self.cfg.max_positions:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the text encoder's {self.cfg.max_positions} positions")
        x = self.embeddings(input_ids)
        for layer in self.encoder.layers[: self.cfg.layers - (clip_skip - 1)]:
            x = layer(x)
        return self.final_layer_norm(x) if final_norm else x

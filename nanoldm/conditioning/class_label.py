"""Class conditioning: a learned embedding of the class label is the whole context (one token).

A class-conditional LDM (Rombach et al. 2022, sec. 4.1 on ImageNet) feeds the label's embedding to the UNet's
cross-attention. Index ``num_classes`` is a learned **null class**: training replaces a label by it with
probability ``cond_drop``, so the same UNet learns the unconditional model that classifier-free guidance needs
(Ho & Salimans 2022). Any negative label (the shapes world's ``NO_CLASS`` = -1) also maps to the null class.
"""
from __future__ import annotations

import torch
from torch import nn


class ClassEmbedding(nn.Module):
    """``labels (B,) int -> context (B, 1, context_dim)``; ``drop (B,) bool`` swaps in the null class."""

    def __init__(self, num_classes: int, context_dim: int):
        super().__init__()
        self.num_classes, self.context_dim = num_classes, context_dim
        self.embedding = nn.Embedding(num_classes + 1, context_dim)  # the last row is the null class
        nn.init.normal_(self.embedding.weight, std=0.02)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: labels (B,) int, drop (B,) bool or None -> (B, 1, context_dim)."""
        labels = labels.to(self.embedding.weight.device).long()
        null = labels < 0
        if drop is not None:
            null = null | drop.to(labels.device)
        labels = torch.where(null, torch.full_like(labels, self.null_label), labels)
        return self.embedding(labels)[:, None, :]

    def null(self, batch_size: int) -> torch.Tensor:
        """The unconditional context. Shapes: -> (B, 1, context_dim)."""
        labels = torch.full((batch_size,), self.null_label, device=self.embedding.weight.device)
        return self.embedding(labels)[:, None, :]

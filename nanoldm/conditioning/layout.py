"""Layout conditioning: one context token per object, from its class and its box (as GLIGEN's grounding
tokens, Li et al. 2023, and LDM's layout-to-image model, Rombach et al. 2022 sec. 4.3).

    token_i = class_embedding(class_i) + mlp(fourier(box_i)),  box = (x0, y0, x1, y1) in [0, 1], y down

``fourier`` maps each coordinate v to (v, sin(2^k pi v), cos(2^k pi v)) for k < fourier_bands (Mildenhall et
al. 2020; Tancik et al. 2020), so the MLP can resolve small differences in position. Layouts are padded to
``max_objects`` with a learned **null token**; a dropped layout (classifier-free guidance, Ho & Salimans 2022)
is all null tokens. Padding slots are marked by a negative class (the shapes world's ``NO_CLASS``).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fourier_features(boxes: torch.Tensor, bands: int) -> torch.Tensor:
    """Shapes: boxes (..., 4) -> (..., 4 * (1 + 2 * bands))."""
    freqs = (2.0 ** torch.arange(bands, device=boxes.device, dtype=boxes.dtype)) * math.pi  # (bands,)
    angles = boxes[..., None] * freqs  # (..., 4, bands)
    feats = torch.cat([boxes[..., None], angles.sin(), angles.cos()], dim=-1)  # (..., 4, 1 + 2 bands)
    return feats.flatten(-2)


class LayoutEncoder(nn.Module):
    """``classes (B, M) int, boxes (B, M, 4) -> context (B, max_objects, context_dim)``, M <= max_objects."""

    def __init__(self, num_classes: int, context_dim: int, max_objects: int = 2, fourier_bands: int = 8):
        super().__init__()
        self.num_classes, self.context_dim = num_classes, context_dim
        self.max_objects, self.fourier_bands = max_objects, fourier_bands
        self.class_embedding = nn.Embedding(num_classes, context_dim)
        self.box_mlp = nn.Sequential(nn.Linear(4 * (1 + 2 * fourier_bands), context_dim), nn.SiLU(),
                                     nn.Linear(context_dim, context_dim))
        self.null_token = nn.Parameter(torch.zeros(context_dim))
        nn.init.normal_(self.class_embedding.weight, std=0.02)
        nn.init.normal_(self.null_token, std=0.02)

    def forward(self, classes: torch.Tensor, boxes: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: classes (B, M) int (< 0: no object), boxes (B, M, 4), drop (B,) bool or None
        -> (B, max_objects, context_dim)."""
        classes, boxes = self.pad(classes.to(self.null_token.device).long(), boxes.to(self.null_token))
        present = classes >= 0  # (B, N)
        if drop is not None:
            present = present & ~drop.to(present.device)[:, None]
        tokens = self.class_embedding(classes.clamp(min=0)) + self.box_mlp(
            fourier_features(boxes, self.fourier_bands))  # (B, N, D)
        return torch.where(present[..., None], tokens, self.null_token.expand_as(tokens))

    def pad(self, classes: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad (or refuse) to max_objects slots. Shapes: (B, M), (B, M, 4) -> (B, N), (B, N, 4)."""
        B, M = classes.shape
        if M > self.max_objects:
            raise ValueError(f"a layout holds at most {self.max_objects} objects, got {M}")
        extra = self.max_objects - M
        classes = torch.cat([classes, classes.new_full((B, extra), -1)], dim=1)
        boxes = torch.cat([boxes, boxes.new_zeros(B, extra, 4)], dim=1)
        return classes, boxes

    def null(self, batch_size: int) -> torch.Tensor:
        """The unconditional context: all null tokens. Shapes: -> (B, max_objects, context_dim)."""
        return self.null_token.expand(batch_size, self.max_objects, -1)

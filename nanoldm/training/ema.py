"""Exponential moving average of the trainable weights (Polyak averaging).

``ema <- decay * ema + (1 - decay) * param`` after every optimizer step. The averaged weights are what samples
are drawn with during training and what a trained model ships with.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


class EMA:
    """A float32 shadow copy of named parameters, kept on the parameters' device."""

    def __init__(self, named_params: dict[str, torch.nn.Parameter], decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.params = named_params
        self.shadow = {name: p.detach().clone().float() for name, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step; call after ``optimizer.step()``."""
        for name, p in self.params.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise KeyError(f"EMA state lacks {missing[:5]}")
        for name, t in tensors.items():
            self.shadow[name].copy_(t)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within the block the parameters hold the EMA weights; the training weights come back afterwards."""
        with torch.no_grad():
            saved = {name: p.detach().clone() for name, p in self.params.items()}
            for name, p in self.params.items():
                p.copy_(self.shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(saved[name])

"""Seeded noise, reproducible per image.

Image ``i`` of a batch uses seed ``seed + i``; its starting noise is
``torch.randn((1, C, h, w), generator=torch.Generator("cpu").manual_seed(seed + i))``, drawn on the CPU and moved
to the device afterwards. Stochastic samplers draw their later noise from the same per-image generators, so an
image comes out the same whether it is generated alone or in a batch, on a CPU or a GPU; and diffusers, given
a list of CPU generators seeded the same way, draws the same numbers.
"""
from __future__ import annotations

import random

import torch

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int | None) -> int:
    """``None`` or -1 (A1111's 'random') picks a fresh seed; anything else must be a valid seed."""
    if seed is None or seed == -1:
        return random.randint(0, MAX_SEED)
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}] or -1 for random, got {seed}")
    return int(seed)


class ImageNoise:
    """One CPU generator per image; ``noise()`` returns a (B, C, h, w) draw, one slice per generator."""

    def __init__(self, seeds: list[int], shape: tuple[int, int, int], *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        self.seeds = list(seeds)  # the SDE samplers' Brownian trees are seeded with them too (A1111)
        self.shape, self.device, self.dtype = shape, torch.device(device), dtype

    def __call__(self) -> torch.Tensor:
        """Shapes: -> (B, C, h, w)."""
        draws = [torch.randn((1, *self.shape), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.cat(draws).to(self.device, self.dtype)

"""Brownian-tree noise for the SDE samplers (Li et al. 2020, "Scalable Gradients for Stochastic Differential
Equations"; ``torchsde.BrownianTree``): the noise between two noise levels is the increment of one Brownian path
W(sigma), so it does not depend on how the steps cut the interval, and a path per image keeps an image the same
whatever the batch it is in (k-diffusion's ``BrownianTreeNoiseSampler`` with a list of seeds, as A1111 seeds it)."""
from __future__ import annotations

import warnings

import torch
import torchsde


class BrownianNoise:
    """``noise(sigma, sigma_next) -> (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)``, N(0, I).

    One tree per seed (image i: seeds[i]) over [sigma_min, sigma_max], each on a (C, h, w) path; built on the CPU
    in float32 and moved to ``device`` afterwards. A single int seed gives one tree for the whole batch (ComfyUI).
    Shapes: shape (B, C, h, w) -> draws of that shape.
    """

    def __init__(self, shape: tuple[int, ...], sigma_min: float, sigma_max: float, seeds: list[int] | int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.batched = not isinstance(seeds, int)
        w0 = torch.zeros(shape[1:] if self.batched else shape, dtype=torch.float32)
        t0, t1 = torch.as_tensor(float(sigma_min)), torch.as_tensor(float(sigma_max))
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in (seeds if self.batched else [seeds])]
        self.device, self.dtype = torch.device(device), dtype

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        lo, hi = sorted((torch.as_tensor(sigma).cpu().float(), torch.as_tensor(sigma_next).cpu().float()))
        sign = 1.0 if float(sigma) < float(sigma_next) else -1.0
        with warnings.catch_warnings():  # levels recomputed from log sigma land an ulp outside the tree's range
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            w = torch.stack([tree(lo, hi) for tree in self.trees]) if self.batched else self.trees[0](lo, hi)
        return (w * sign / (hi - lo).sqrt()).to(self.device, self.dtype)

"""Seeded noise, reproducible per image, as A1111 (version 1.10, ``modules/rng.py``: ``ImageRNG``) draws it.

Image ``i`` of a batch uses seed ``seed + i``; its starting noise is
``torch.randn((1, C, h, w), generator=torch.Generator("cpu").manual_seed(seed + i))``, drawn on the CPU and moved
to the device afterwards. Stochastic samplers draw their later noise from the same per-image generators, so an
image comes out the same whether it is generated alone or in a batch, on a CPU or a GPU; and diffusers, given
a list of CPU generators seeded the same way, draws the same numbers.

A1111's extras, all on the first draw (``ImageRNG.first``):

- **variation seed** (``subseeds``, ``subseed_strength``): the seed's noise is slerped towards the noise of the
  image's subseed (``slerp``; strength 0: the seed's noise, 1: the subseed's). With a variation seed A1111 gives
  every image of a batch the same seed and image i the subseed ``subseed + i`` (:func:`batch_seeds`).
- **resize seed from** (``resize_from``, latent cells): the seed's noise is drawn at that size and pasted, centred
  (cropped where larger), over the image's own noise of the real size; so a seed keeps its picture's layout at
  a slightly different size.
- **eta noise seed delta** (ENSD, ``ensd``): after the first draw every generator is replaced by a fresh one
  seeded ``seed + ensd``; the samplers' later noise comes from those.
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


def batch_seeds(seed: int, batch_size: int, subseed: int | None = None,
                subseed_strength: float = 0.0) -> tuple[list[int], list[int]]:
    """(seeds, subseeds) of a batch as A1111's ``process_images_inner`` assigns them: seed + i (the same seed for
    every image when a variation seed is on), subseed + i."""
    seeds = [seed + (i if subseed_strength == 0 else 0) for i in range(batch_size)]
    subseeds = [] if subseed is None else [subseed + i for i in range(batch_size)]
    return seeds, subseeds


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's ``slerp`` (``modules/rng.py``), kept exactly as it computes it: on one image's (C, h, w) noise the
    angle is taken per column, over dim 1 (h); nearly parallel inputs fall back to ``low * t + high * (1 - t)``
    (A1111's own weighting, reversed against the slerp branch). Shapes: low, high (C, h, w) -> (C, h, w)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)  # (C, w)
    if dot.mean() > 0.9995:
        return low * t + high * (1 - t)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so).unsqueeze(1) * low + (torch.sin(t * omega) / so).unsqueeze(1) * high


def _randn(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The first draw of a fresh CPU generator (A1111's ``randn(seed, shape)`` with CPU noise)."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def _paste_centred(noise: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """``noise`` pasted over the middle of ``onto``, cropped where it is larger (A1111's seed resize).
    Shapes: noise (C, h0, w0), onto (C, h, w) -> (C, h, w)."""
    dx, dy = (onto.shape[2] - noise.shape[2]) // 2, (onto.shape[1] - noise.shape[1]) // 2
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    tx, ty, sx, sy = max(dx, 0), max(dy, 0), max(-dx, 0), max(-dy, 0)
    onto[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
    return onto


class ImageNoise:
    """One CPU generator per image; ``noise()`` returns a (B, C, h, w) draw, one slice per generator.

    The first call applies A1111's extras (module docstring): ``subseeds`` with ``subseed_strength`` in [0, 1],
    ``resize_from`` = (h0, w0) latent cells, ``ensd``; later calls continue the (re-seeded) generators.
    """

    def __init__(self, seeds: list[int], shape: tuple[int, int, int], *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, subseeds: list[int] | None = None,
                 subseed_strength: float = 0.0, resize_from: tuple[int, int] | None = None, ensd: int = 0):
        self.seeds = list(seeds)
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]
        self.shape, self.device, self.dtype = tuple(shape), torch.device(device), dtype
        self.subseeds, self.subseed_strength = list(subseeds or []), float(subseed_strength)
        self.resize_from, self.ensd = resize_from, int(ensd)
        self._first = True

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """(B, C, h, w): the shape of every draw."""
        return (len(self.seeds), *self.shape)

    def __call__(self) -> torch.Tensor:
        """Shapes: -> (B, C, h, w)."""
        if self._first:
            self._first = False
            draws = [self._first_draw(i) for i in range(len(self.seeds))]
            if self.ensd:
                self.generators = [torch.Generator("cpu").manual_seed(s + self.ensd) for s in self.seeds]
        else:
            draws = [self._draw(i, self.shape) for i in range(len(self.generators))]
        return torch.stack(draws).to(self.device, self.dtype)

    def _first_draw(self, i: int) -> torch.Tensor:
        """Image i's starting noise (A1111's ``ImageRNG.first``). Shapes: -> (C, h, w)."""
        shape = self.shape if self.resize_from is None else (self.shape[0], *self.resize_from)
        resized = shape != self.shape
        # 1. the seed's noise: the image's own generator, or at the resize-from size a fresh one
        noise = _randn(self.seeds[i], shape) if resized else self._draw(i, shape)
        # 2. towards the variation seed's noise (a missing subseed is 0, as in A1111)
        if self.subseeds and self.subseed_strength != 0:
            subseed = self.subseeds[i] if i < len(self.subseeds) else 0
            noise = slerp(self.subseed_strength, noise, _randn(subseed, shape))
        # 3. resized: pasted over the image's own noise of the real size
        if resized:
            noise = _paste_centred(noise, self._draw(i, self.shape))
        return noise

    def _draw(self, i: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generators[i], dtype=torch.float32)

    def posterior_draw(self, posterior) -> torch.Tensor:
        """img2img's latents from the VAE's posterior (one image, or one per image): each image's sample from
        its own generator, before that image's noise (as diffusers does). Shapes: posterior of (1 or B) ->
        (B, C, h, w)."""
        last = posterior.mean.shape[0] - 1
        return torch.cat([posterior.item(min(i, last)).sample(g) for i, g in enumerate(self.generators)])


class BatchNoise:
    """ComfyUI's noise (``comfy/sample.py: prepare_noise``; ``k_diffusion/sampling.py: default_noise_sampler``):
    the starting noise is one (B, C, h, w) draw of a CPU generator seeded with ``seed`` (so image i depends on the
    batch size), and the samplers' later noise comes from a second CPU generator seeded with ``seed + 1``, again a
    whole batch per call. ``seeds`` (for the SDE samplers' one Brownian tree) is the single seed."""

    def __init__(self, seed: int, batch_size: int, shape: tuple[int, int, int], *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.seeds, self.batch_shape = seed, (batch_size, *shape)
        self.device, self.dtype = torch.device(device), dtype
        self._start: torch.Generator | None = torch.Generator("cpu").manual_seed(seed)
        self._later: torch.Generator | None = None

    def posterior_draw(self, posterior) -> torch.Tensor:
        """img2img's latents: the posterior's mean, for ComfyUI samples it from torch's global generator, which
        no seed fixes. Shapes: posterior of (1 or B) -> (B, C, h, w)."""
        mean = posterior.mode()
        return mean.expand(self.batch_shape[0], *mean.shape[1:])

    def __call__(self) -> torch.Tensor:
        """Shapes: -> (B, C, h, w)."""
        if self._start is not None:
            generator, self._start = self._start, None
        else:
            self._later = self._later or torch.Generator("cpu").manual_seed(self.seeds + 1)
            generator = self._later
        return torch.randn(self.batch_shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)

"""Run-time knobs shared by the command line and the Python API (architecture lives in ``config.py``)."""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_SAMPLER = "Euler a"


@dataclass
class GenerateOptions:
    """What a user chooses for one generation call. ``validate`` names every impossible setting."""

    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int | None = None  # None or -1: random
    width: int | None = None  # None: the model's native size
    height: int | None = None
    batch_size: int = 1
    clip_skip: int = 1
    strength: float = 0.75  # img2img / inpaint: how much of the schedule is re-run
    eta: float = 0.0  # DDIM's stochasticity

    def validate(self, latent_factor: int) -> None:
        if not isinstance(self.prompt, str) or not isinstance(self.negative_prompt, str):
            raise ValueError("prompt and negative prompt must be strings")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {self.strength}")
        if self.clip_skip < 1:
            raise ValueError(f"clip skip must be at least 1, got {self.clip_skip}")
        for name in ("width", "height"):
            size = getattr(self, name)
            if size is not None and (size < latent_factor or size % latent_factor):
                raise ValueError(f"{name} {size} is not a positive multiple of the latent factor {latent_factor}")

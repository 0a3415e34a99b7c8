"""``LatentDiffusion``: the three networks of Stable Diffusion, their tokenizer and the config that built them.

Our single-file checkpoint is this object's ``state_dict()`` (keys prefixed ``unet.``, ``vae.``,
``text_encoder.``) with ``config`` as JSON in the metadata.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.config import ModelConfig
from nanoldm.text.clip import CLIPTextEncoder
from nanoldm.unet.unet import UNet

COMPONENTS = ("unet", "vae", "text_encoder")


@dataclass
class LatentDiffusion:
    config: ModelConfig
    unet: UNet
    vae: AutoencoderKL
    text_encoder: CLIPTextEncoder
    tokenizer: object | None = None  # nanoldm.text.tokenizer.CLIPTokenizer
    # textual-inversion token -> A1111's short hash of the file it was read from (the infotext's "TI hashes")
    embedding_hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: ModelConfig, *, tokenizer=None, device: str | torch.device | None = None) -> "LatentDiffusion":
        """Randomly initialised networks (``device="meta"`` builds shapes only, allocating nothing)."""
        with torch.device(device or "cpu"):
            return cls(config, UNet(config.unet), AutoencoderKL(config.vae), CLIPTextEncoder(config.text), tokenizer)

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in COMPONENTS}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": v for name, m in self.modules().items() for k, v in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
        """Load every tensor strictly; on any mismatch raise one ``CheckpointError`` naming the differences."""
        check_state(self.state_dict(), state, source)
        for name, m in self.modules().items():
            prefix = name + "."
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True,
                              assign=_on_meta(m))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "LatentDiffusion":
        for m in self.modules().values():
            m.to(device=device, dtype=dtype)
        return self

    def eval(self) -> "LatentDiffusion":
        for m in self.modules().values():
            m.eval()
        return self

    def num_parameters(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}


def _on_meta(m: nn.Module) -> bool:
    return any(p.is_meta for p in m.parameters())


def check_state(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], source: str, show: int = 5) -> None:
    """Raise ``CheckpointError`` if ``got`` lacks keys, has extra keys, or has tensors of other shapes."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} is {tuple(got[k].shape)} in the file but {tuple(expected[k].shape)} in the model"
              for k in expected if k in got and got[k].shape != expected[k].shape]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f", ... {len(items) - show} more" if len(items) > show else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:show])}{more})")
    raise CheckpointError(f"{source}: not a checkpoint of this architecture: " + "; ".join(parts))

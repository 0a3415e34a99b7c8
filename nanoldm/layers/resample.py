"""Down- and up-sampling by 2."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.layers.conv import Conv2d


class Downsample(nn.Module):
    """Strided 3x3 conv. ``asymmetric_pad`` pads (0, 1, 0, 1) then convolves unpadded (the VAE's way);
    otherwise the conv pads 1 on every side (the UNet's way)."""

    def __init__(self, channels: int, *, asymmetric_pad: bool):
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (or to ``size``), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Shapes: (B, C, H, W) -> (B, C, 2H, 2W), or (B, C, *size)."""
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)

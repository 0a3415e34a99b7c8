"""AutoencoderKL (Rombach et al. 2022, sec. 3.1): images <-> latents downsampled 2^(levels-1) per side.

``variational=True``: the encoder predicts a diagonal Gaussian and training adds a KL term, which keeps the
latent space close to N(0, I), so random latents decode to plausible images. ``variational=False``: a plain
AE with a deterministic bottleneck, for comparison. Module names match diffusers' ``AutoencoderKL``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.autoencoder.distribution import DiagonalGaussian, PointMass
from nanoldm.config import AutoencoderConfig
from nanoldm.layers.attention import SpatialSelfAttention
from nanoldm.layers.conv import Conv2d
from nanoldm.layers.resample import Downsample, Upsample
from nanoldm.layers.resnet import ResBlock


class AutoencoderLevel(nn.Module):
    def __init__(self, resnets: list[nn.Module], resampler: nn.Module | None, *, up: bool):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self._resample_name = "upsamplers" if up else "downsamplers"  # the checkpoint's name for it
        setattr(self, self._resample_name, nn.ModuleList([resampler] if resampler is not None else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        for resample in getattr(self, self._resample_name):
            x = resample(x)
        return x


class MidBlock(nn.Module):
    """ResBlock -> single-head self-attention -> ResBlock at the lowest resolution."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([_res(ch, ch, groups), _res(ch, ch, groups)])
        self.attentions = nn.ModuleList([SpatialSelfAttention(ch, norm_groups=groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


def _res(i: int, o: int, groups: int) -> ResBlock:
    return ResBlock(i, o, emb_dim=None, norm_groups=groups, eps=1e-6)


class Encoder(nn.Module):
    """Shapes: (B, in_channels, H, W) -> (B, out_channels, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig, out_channels: int):
        super().__init__()
        base, groups, levels = cfg.base_channels, cfg.norm_groups, len(cfg.channel_mult)
        self.conv_in = Conv2d(cfg.in_channels, base, 3, padding=1)
        self.down_blocks, ch = nn.ModuleList(), base
        for level, mult in enumerate(cfg.channel_mult):
            out = base * mult
            resnets = [_res(ch if j == 0 else out, out, groups) for j in range(cfg.num_res_blocks)]
            down = Downsample(out, asymmetric_pad=True) if level < levels - 1 else None
            self.down_blocks.append(AutoencoderLevel(resnets, down, up=False))
            ch = out
        self.mid_block = MidBlock(ch, groups)
        self.conv_norm_out = nn.GroupNorm(groups, ch, eps=1e-6)
        self.conv_out = Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    """Shapes: (B, z_channels, h, w) -> (B, out_channels, h*f, w*f)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        base, groups = cfg.base_channels, cfg.norm_groups
        ch = base * cfg.channel_mult[-1]
        self.conv_in = Conv2d(cfg.z_channels, ch, 3, padding=1)
        self.mid_block = MidBlock(ch, groups)
        self.up_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            out = base * mult
            resnets = [_res(ch if j == 0 else out, out, groups) for j in range(cfg.num_res_blocks + 1)]
            self.up_blocks.append(AutoencoderLevel(resnets, Upsample(out) if level > 0 else None, up=True))
            ch = out
        self.conv_norm_out = nn.GroupNorm(groups, ch, eps=1e-6)
        self.conv_out = Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    """``encode(x) -> posterior``; ``decode(z) -> x``. Images are in [-1, 1]; latents are *unscaled*
    (multiply by ``cfg.scale_factor`` before diffusion, divide before decoding)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        moments = 2 * cfg.z_channels if cfg.variational else cfg.z_channels
        self.encoder = Encoder(cfg, moments)
        self.decoder = Decoder(cfg)
        self.quant_conv = Conv2d(moments, moments, 1)
        self.post_quant_conv = Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian | PointMass:
        """Shapes: x (B, 3, H, W) -> posterior over z (B, z_channels, H/f, W/f)."""
        moments = self.quant_conv(self.encoder(x))
        return DiagonalGaussian(moments) if self.cfg.variational else PointMass(moments)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Shapes: z (B, z_channels, h, w) -> (B, 3, h*f, w*f)."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Reconstruction through a posterior sample. Returns (x_hat, posterior)."""
        posterior = self.encode(x)
        return self.decode(posterior.sample(generator)), posterior

"""The denoising UNet of Stable Diffusion 1.x (Rombach et al. 2022): ResBlocks with the timestep embedding,
SpatialTransformers with cross-attention at chosen levels, skip connections from the down path to the up path.

Module names match diffusers' ``UNet2DConditionModel`` state dict, so its checkpoints load without renaming;
``checkpoint/keymap.py`` translates the SD single-file names.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoldm.config import UNetConfig
from nanoldm.layers.conv import Conv2d
from nanoldm.layers.frozen import frozen_block
from nanoldm.layers.resample import Downsample, Upsample
from nanoldm.layers.resnet import ResBlock
from nanoldm.layers.timestep import TimestepEmbedding, timestep_features
from nanoldm.unet.transformer import SpatialTransformer


class UNetLevel(nn.Module):
    """One resolution level: ``resnets[i]`` each optionally followed by ``attentions[i]``, then a resampler."""

    def __init__(self):
        super().__init__()
        self.resnets = nn.ModuleList()
        self.attentions = nn.ModuleList()  # empty at levels without attention
        self.downsamplers = nn.ModuleList()  # down path: [Downsample] except at the last level
        self.upsamplers = nn.ModuleList()  # up path: [Upsample] except at the last level

    def layers(self):
        """Yield (resnet, attention or None) pairs."""
        for i, resnet in enumerate(self.resnets):
            yield resnet, (self.attentions[i] if len(self.attentions) else None)


class UNet(nn.Module):
    """eps (or v) prediction network: ``unet(x_t, t, context) -> (B, out_channels, H, W)``."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb_dim, groups = cfg.model_channels, cfg.time_embed_dim, cfg.norm_groups
        res = lambda i, o: ResBlock(i, o, emb_dim=emb_dim, norm_groups=groups, eps=1e-5)  # noqa: E731
        attn = lambda c: SpatialTransformer(  # noqa: E731
            c, heads=cfg.heads_for(c), depth=cfg.transformer_depth, context_dim=cfg.context_dim,
            norm_groups=groups, linear_projection=cfg.use_linear_projection)

        self.conv_in = Conv2d(cfg.in_channels, mc, 3, padding=1)
        self.time_embedding = TimestepEmbedding(mc, emb_dim)
        self.class_embedding = nn.Embedding(cfg.num_classes, emb_dim) if cfg.num_classes else None

        # 1. Down path; remember the channels of every tensor pushed onto the skip stack.
        skip_channels, ch = [mc], mc
        self.down_blocks = nn.ModuleList()
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            block, out = UNetLevel(), mc * mult
            for _ in range(cfg.num_res_blocks):
                block.resnets.append(res(ch, out))
                if cfg.attention_levels[level]:
                    block.attentions.append(attn(out))
                ch = out
                skip_channels.append(ch)
            if level != last:
                block.downsamplers.append(Downsample(ch, asymmetric_pad=False))
                skip_channels.append(ch)
            self.down_blocks.append(block)

        # 2. Middle: ResBlock, transformer, ResBlock at the lowest resolution.
        self.mid_block = UNetLevel()
        self.mid_block.resnets.extend([res(ch, ch), res(ch, ch)])
        self.mid_block.attentions.append(attn(ch))

        # 3. Up path: one more ResBlock per level than on the way down, each eating one skip.
        self.up_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            block, out = UNetLevel(), mc * mult
            for _ in range(cfg.num_res_blocks + 1):
                block.resnets.append(res(ch + skip_channels.pop(), out))
                if cfg.attention_levels[level]:
                    block.attentions.append(attn(out))
                ch = out
            if level != 0:
                block.upsamplers.append(Upsample(ch))
            self.up_blocks.append(block)

        self.conv_norm_out = nn.GroupNorm(groups, ch, eps=1e-5)
        self.conv_out = Conv2d(ch, cfg.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, context: torch.Tensor,
                class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: x (B, in_channels, H, W), t (B,) or one value for all, context (B, M, context_dim),
        class_labels (B,) -> (B, out_channels, H, W)."""
        if (fast := frozen_block()) is not None and fast.takes(self):
            return fast.unet(self, x, t, context, class_labels)
        t = torch.as_tensor(t, device=x.device).reshape(-1)  # (B,) or (1,): one embedding, broadcast
        emb = self.time_embedding(timestep_features(t, self.cfg.model_channels).to(x.dtype))  # (B or 1, emb_dim)
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("this UNet has a class embedding: pass class_labels")
            emb = emb + self.class_embedding(class_labels).to(emb.dtype)

        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            for resnet, attn in block.layers():
                h = resnet(h, emb)
                h = attn(h, context) if attn is not None else h
                skips.append(h)
            for down in block.downsamplers:
                h = down(h)
                skips.append(h)

        mid = self.mid_block
        h = mid.resnets[1](mid.attentions[0](mid.resnets[0](h, emb), context), emb)

        for block in self.up_blocks:
            for resnet, attn in block.layers():
                h = resnet(torch.cat([h, skips.pop()], dim=1), emb)
                h = attn(h, context) if attn is not None else h
            for up in block.upsamplers:
                h = up(h, size=skips[-1].shape[-2:])
        return self.conv_out(F.silu(self.conv_norm_out(h)))

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, SpatialTransformer):
                m.checkpointing = enabled


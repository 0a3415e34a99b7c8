"""A patch discriminator (PatchGAN, Isola et al. 2017), the adversarial half of the autoencoder's training loss
(Esser et al. 2021, "taming transformers"; Rombach et al. 2022, app. G): it scores overlapping patches of an
image as real (high) or reconstructed (low), which pushes the decoder towards sharp, realistic detail that a
pixel loss alone blurs.

Layout: conv 4x4 stride 2 -> LeakyReLU(0.2), then ``layers - 1`` blocks of conv 4x4 stride 2 -> GroupNorm ->
LeakyReLU, one conv 4x4 stride 1 block, and a final conv 4x4 stride 1 to one logit per patch.

Losses (hinge, as in taming's ``LPIPSWithDiscriminator``):
    discriminator: mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))
    autoencoder:   -mean(D(x_hat))   (through the decoder only; the discriminator's weights are held fixed)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


class PatchDiscriminator(nn.Module):
    """``(B, 3, H, W) -> (B, 1, h, w)`` patch logits."""

    def __init__(self, channels: int = 64, layers: int = 2, norm_groups: int = 8):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2 ** i, 8)
            stride = 2 if i < layers else 1
            blocks += [nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=False), nn.GroupNorm(norm_groups, out),
                       nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def generator_loss(self, x_hat: torch.Tensor) -> torch.Tensor:
        """-mean D(x_hat), with the discriminator's weights detached: only the autoencoder gets gradients."""
        frozen = {name: p.detach() for name, p in self.named_parameters()}
        return -functional_call(self, frozen, (x_hat,)).mean()

    def discriminator_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Hinge loss on real images and (detached) reconstructions: only the discriminator gets gradients."""
        return F.relu(1.0 - self(x)).mean() + F.relu(1.0 + self(x_hat.detach())).mean()

"""The encoder's posterior q(z | x): a diagonal Gaussian (Kingma & Welling 2014), or a point mass for a plain AE."""
from __future__ import annotations

import torch


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) from a (B, 2C, h, w) moments tensor (mean first, then log-variance)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterisation: z = mean + std * eps, eps ~ N(0, I). Shapes: -> (B, C, h, w)."""
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype,
                          device=generator.device if generator is not None else self.mean.device)
        return self.mean + self.std * eps.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean

    def item(self, i: int) -> "DiagonalGaussian":
        """The posterior of image ``i`` alone."""
        return DiagonalGaussian(torch.cat([self.mean[i:i + 1], self.logvar[i:i + 1]], dim=1))

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) summed over latent dimensions. Shapes: -> (B,)."""
        var = self.std ** 2
        return 0.5 * (self.mean ** 2 + var - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class PointMass:
    """The plain autoencoder's 'posterior': z = encoder(x) exactly; no noise, no KL."""

    def __init__(self, z: torch.Tensor):
        self.mean = z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean

    def item(self, i: int) -> "PointMass":
        return PointMass(self.mean[i:i + 1])

    def kl(self) -> torch.Tensor:
        return self.mean.new_zeros(self.mean.shape[0])

"""The autoencoder's training task: the loss of :mod:`nanoldm.training.vae` (reconstruction + KL [+ patch
discriminator]) as a loop :class:`~nanoldm.training.loop.Task`, and the measures read off a trained
autoencoder (held-out reconstructions, PSNR, the latent scale)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.autoencoder.discriminator import PatchDiscriminator
from nanoldm.training.vae_pictures import rows_picture

LOSSES = ("l1", "l2")


def check_loss(loss: str) -> None:
    """A clear error for a reconstruction loss that is not one of ``LOSSES``."""
    if loss not in LOSSES:
        raise ValueError(f"unknown reconstruction loss {loss!r}; choose one of {', '.join(LOSSES)}")


class VAETask:
    """The loop's :class:`~nanoldm.training.loop.Task` for an autoencoder. Shapes: images (N, 3, H, W)."""

    def __init__(self, vae: AutoencoderKL, images: torch.Tensor, held_out: torch.Tensor, *,
                 loss: str = "l1", kl_weight: float = 1e-6, disc_weight: float = 0.0, disc_start: int = 0):
        check_loss(loss)
        self.vae, self.images, self.held_out = vae, images, held_out
        self.loss_kind, self.kl_weight = loss, kl_weight
        self.disc_weight, self.disc_start, self.step = disc_weight, disc_start, 0
        self.discriminator = PatchDiscriminator() if disc_weight > 0 else None

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"vae": self.vae, **({"discriminator": self.discriminator} if self.discriminator else {})}

    def options(self) -> dict:
        """What the loss depends on beyond the config; a resume must keep them (see the loop)."""
        return {"loss": self.loss_kind, "kl_weight": self.kl_weight, "disc_weight": self.disc_weight,
                "disc_start": self.disc_start}

    def set_step(self, step: int) -> None:
        """The loop tells the task its step before each one (the discriminator starts at ``disc_start``)."""
        self.step = step

    def num_examples(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int]) -> torch.Tensor:
        return self.images[indices]

    def loss(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.terms(batch, generator)["loss"]

    def terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"loss", "rec", "kl"} for a batch (see the module docstring)."""
        x_hat, posterior = self.vae(x, generator)
        rec = F.l1_loss(x_hat, x) if self.loss_kind == "l1" else F.mse_loss(x_hat, x)
        kl = posterior.kl().mean() / x[0].numel()
        terms = {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl}
        if self.discriminator is not None and self.step >= self.disc_start:
            terms["g_adv"] = self.discriminator.generator_loss(x_hat)
            terms["d_loss"] = self.discriminator.discriminator_loss(x, x_hat)
            terms["loss"] = terms["loss"] + self.disc_weight * terms["g_adv"] + terms["d_loss"]
        return terms

    def sample(self, step: int) -> Image.Image:
        """Held-out originals (top row) over their reconstructions (bottom row)."""
        x = self.held_out[:8]
        return rows_picture([x, reconstruct(self.vae, x)])


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Decode the posterior mean, clamped to [-1, 1]. Shapes: (N, 3, H, W) -> same."""
    was_training = vae.training
    vae.eval()
    out = torch.cat([vae.decode(vae.encode(c).mode()) for c in x.split(batch_size)]).clamp(-1, 1)
    vae.train(was_training)
    return out


def psnr(vae: AutoencoderKL, x: torch.Tensor) -> float:
    """Mean per-image PSNR (dB) of the reconstructions, pixel values taken in [0, 1]."""
    mse = ((reconstruct(vae, x) - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, images: torch.Tensor, *, seed: int = 0, batch_size: int = 64) -> float:
    """1 / std of posterior samples z over ``images`` (LDM's ``scale_by_std``)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([vae.encode(c).sample(g) for c in images.split(batch_size)])
    return float(1.0 / z.float().std())

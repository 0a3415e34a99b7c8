"""``ModelParts``: everything a pipeline function needs from a loaded model, typed and read once.

Pipeline functions (txt2img, img2img, inpaint, sampling from contexts) take this object and nothing else of the
model: the networks, the noise schedule and what the UNet predicts, the VAE's latent scale and downsampling, the
latent channels, the native image size, and where the tensors live. :class:`~nanoldm.pipelines.pipeline.Pipeline`
and the training previews build it with :meth:`ModelParts.from_model`; nothing below reaches back into a model
config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from nanoldm.config import PredictionType
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.model import LatentDiffusion
from nanoldm.rng import ImageNoise


@dataclass(frozen=True)
class ModelParts:
    """The networks and facts of one model, for sampling.

    ``scale_factor``: latents are multiplied by it before diffusion and divided before decoding (SD 1.x: 0.18215).
    ``latent_factor``: pixels per latent cell along each side (the VAE's downsampling, f).
    ``latent_channels``: C, the channels the UNet denoises (its output channels).
    ``concat_channels``: extra UNet input channels beyond C (0; 1 + C for an inpainting model).
    ``image_size``: the native (training) image side in pixels.
    ``cfg_scale``: the guidance scale used when a generation names none (``ModelConfig.default_cfg_scale``).

    Shapes: latents (B, latent_channels, H / latent_factor, W / latent_factor).
    """

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object | None
    schedule: NoiseSchedule
    prediction_type: PredictionType
    scale_factor: float
    latent_factor: int
    latent_channels: int
    concat_channels: int
    image_size: int
    cfg_scale: float
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def from_model(cls, model: LatentDiffusion, schedule: NoiseSchedule | None = None, *,
                   device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ModelParts:
        """The parts of ``model`` as they are now (networks are shared, not copied). ``device`` / ``dtype``
        default to the UNet's; ``schedule`` to the one its config describes."""
        weight = next(model.unet.parameters())
        cfg = model.config
        return cls(unet=model.unet, vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                   schedule=schedule if schedule is not None else NoiseSchedule.from_config(cfg.schedule),
                   prediction_type=cfg.schedule.prediction_type, scale_factor=cfg.vae.scale_factor,
                   latent_factor=cfg.vae.downsample_factor, latent_channels=cfg.unet.out_channels,
                   concat_channels=cfg.unet.in_channels - cfg.unet.out_channels, image_size=cfg.image_size,
                   cfg_scale=cfg.default_cfg_scale,
                   device=torch.device(device) if device is not None else weight.device,
                   dtype=dtype if dtype is not None else weight.dtype)

    @property
    def inpainting(self) -> bool:
        """True for a UNet that takes [mask, masked-image latent] beside the noisy latent."""
        return self.concat_channels == 1 + self.latent_channels

    def guidance(self, cfg_scale: float | None) -> float:
        """``cfg_scale``, or the model's own when None."""
        return self.cfg_scale if cfg_scale is None else cfg_scale

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Pixels -> latent cells. Shapes: (H, W) -> (h, w)."""
        return height // self.latent_factor, width // self.latent_factor

    def noise(self, seeds: list[int], height: int, width: int, **extras) -> ImageNoise:
        """Seeded starting noise for images of ``height`` x ``width`` pixels, one generator per seed (``rng``);
        ``extras``: ImageNoise's A1111 seed extras (subseeds, ...). Shapes: noise() -> (len(seeds), C, h, w)."""
        return ImageNoise(seeds, (self.latent_channels, *self.latent_size(height, width)), device=self.device,
                          dtype=self.dtype, **extras)

    def require_plain(self, what: str) -> None:
        """ValueError for a UNet with extra input channels, which ``what`` cannot feed."""
        if self.concat_channels:
            raise ValueError(f"this is an inpainting model ({self.latent_channels + self.concat_channels} input "
                             f"channels): use inpaint, not {what}")

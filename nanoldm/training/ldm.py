"""``nanoldm train ldm``: a text-conditioned latent diffusion UNet on a frozen VAE and text encoder.

The loss (Rombach et al. 2022, eq. 2; Ho et al. 2020, algorithm 1), for a batch of cached images:

1. z0 ~ q(z | x): a posterior sample from the latent cache (:mod:`nanoldm.data.latents`), already scaled;
2. c = the caption's hidden states, replaced by the empty prompt's with probability ``cond_drop`` (10%), so
   the same UNet also learns the unconditional model that classifier-free guidance needs (Ho & Salimans 2022);
3. t ~ U{0, ..., T-1}, eps ~ N(0, I), z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps;
4. loss = || target - unet(z_t, t, c) ||^2 with target = eps (eps-prediction) or
   v = sqrt(ab_t) eps - sqrt(1 - ab_t) z0 (v-prediction, Salimans & Ho 2022). With ``--min-snr-gamma G``
   each sample's error is weighted by min(SNR_t, G) / SNR_t (eps) or min(SNR_t, G) / (SNR_t + 1) (v), the
   Min-SNR weighting of Hang et al. 2023 (kohya's ``--min_snr_gamma``; the paper uses G = 5), so the nearly
   clean steps, which are easy, stop dominating the gradient.

Every random draw (z0, the drop, t, eps) comes from the loop's generator, so a resumed run is exact.
Only the UNet is trained and checkpointed; the VAE and text encoder come from the base model and stay
frozen. The base model is any model :func:`load_model` reads, or :func:`random_model`: random networks of a
preset built from the seed (so a resume rebuilds the same ones) -- random frozen parts only make sense for
smoke tests; train a VAE and a CLIP first for a real model. At the end the whole model, the UNet with its EMA
weights if EMA is on, is written to ``OUT/model.safetensors``.

``Condition.CLASS|LAYOUT|MASK`` swaps step 2's caption for another condition through two hooks,
``LDMTask.context`` and ``LDMTask.unet_input``: see :mod:`nanoldm.training.ldm_conditions`.

:func:`~nanoldm.training.ldm_trainer.train_ldm` runs this task (or a conditioned one) from Python; the
command line (:mod:`nanoldm.cli.train_ldm`) builds the same call from its flags.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.config import PredictionType
from nanoldm.data.latents import LatentCache
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.images import image_grid, tensor_to_pil
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.txt2img import txt2img

MODEL_FILE = "model.safetensors"
SAMPLE_PROMPTS = ("a large red circle at the top left", "a small blue square in the center",
                  "a green triangle to the left of a yellow circle", "a large purple square at the bottom right")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: PredictionType) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for eps-prediction, and
    min(SNR, gamma) / (SNR + 1) for v-prediction (its loss already carries a factor SNR + 1 over eps')."""
    return snr.clamp(max=gamma) / (snr if prediction is PredictionType.EPSILON else snr + 1)


class LDMTask:
    """The :class:`~nanoldm.training.loop.Task` of a text-conditioned LDM over a :class:`LatentCache`."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, *, cond_drop: float = 0.1,
                 sample_prompts: tuple[str, ...] = SAMPLE_PROMPTS, sample_steps: int = 20, cfg_scale: float = 5.0,
                 min_snr_gamma: float | None = None):
        if not 0.0 <= cond_drop <= 1.0:
            raise ValueError(f"cond_drop must be in [0, 1], got {cond_drop}")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"--min-snr-gamma must be positive, got {min_snr_gamma}")
        self.model, self.cond_drop, self.min_snr_gamma = model, cond_drop, min_snr_gamma
        self.schedule = NoiseSchedule.from_config(model.config.schedule)
        self.prediction = model.config.schedule.prediction_type
        self.sample_prompts, self.sample_steps, self.cfg_scale = sample_prompts, sample_steps, cfg_scale
        freeze(model.vae)
        freeze(model.text_encoder)
        self.cache = cache.to(next(model.unet.parameters()).device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def options(self) -> dict:
        """What the loss depends on beyond the config; a resume must keep them (see the loop)."""
        return {"cond_drop": self.cond_drop, "min_snr_gamma": self.min_snr_gamma, "prediction": self.prediction.value}

    def num_examples(self) -> int:
        return len(self.cache)

    def batch(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices, dtype=torch.int64)

    def drop_mask(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """True where the caption is replaced by the empty prompt. Shapes: -> (B,) bool."""
        return torch.rand(batch_size, generator=generator, device=generator.device) < self.cond_drop

    def loss(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Steps 1-4 of the module docstring. Shapes: indices (B,) -> scalar."""
        B, device = len(indices), self.cache.mean.device
        z0 = self.cache.latents(indices.to(device), generator)  # (B, C, h, w)
        context = self.context(indices.to(device), self.drop_mask(B, generator).to(device))  # (B, L, width)
        t = torch.randint(0, self.schedule.num_train_timesteps, (B,), generator=generator,
                          device=generator.device).to(device)
        noise = torch.randn(z0.shape, generator=generator, device=generator.device).to(device)
        z_t = self.unet_input(self.schedule.q_sample(z0, t, noise), indices.to(device), generator)
        target = noise if self.prediction is PredictionType.EPSILON else self.schedule.velocity(z0, noise, t)
        prediction = self.model.unet(z_t, t, context).float()
        if self.min_snr_gamma is None:
            return F.mse_loss(prediction, target)
        weight = min_snr_weight(self.schedule.snr(t), self.min_snr_gamma, self.prediction)  # (B,)
        return ((prediction - target).pow(2).flatten(1).mean(1) * weight).mean()

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Step 2: the captions' contexts, the empty prompt's where dropped. Shapes: (B,), (B,) bool -> (B, L, D).
        Other conditions override this (:mod:`nanoldm.training.ldm_conditions`)."""
        context = self.cache.context(indices)
        return torch.where(drop[:, None, None], self.cache.empty.expand_as(context), context)

    def unet_input(self, z_t: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The UNet's input: z_t itself; an inpainting task appends its concat channels here."""
        return z_t

    def sample(self, step: int) -> Image.Image:
        """One image per sample prompt (seed 0, CFG), in a row, drawn with the weights now in the UNet."""
        parts = ModelParts.from_model(self.model, self.schedule)
        opts = GenerateOptions(steps=self.sample_steps, cfg_scale=self.cfg_scale, seed=0, width=parts.image_size,
                               height=parts.image_size)
        opts.validate(parts.latent_factor)
        with evaluating(self.model.unet):
            images = [tensor_to_pil(txt2img(parts, dataclasses.replace(opts, prompt=p))[0])[0]
                      for p in self.sample_prompts]
        return image_grid(images, columns=len(images))


@contextmanager
def evaluating(module: torch.nn.Module):
    """``module`` in eval mode for the block (a preview in the middle of training), then back in its mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def freeze(module: torch.nn.Module) -> None:
    module.eval()
    module.requires_grad_(False)


def with_prediction(model: LatentDiffusion, prediction: PredictionType) -> LatentDiffusion:
    """The model with its config saying what the UNet is trained to predict (samplers read it)."""
    schedule = dataclasses.replace(model.config.schedule, prediction_type=prediction)
    model.config = dataclasses.replace(model.config, schedule=schedule)
    return model

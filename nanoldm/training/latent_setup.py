"""What the trainers on a frozen VAE's latent cache (ldm, embedding, hypernetwork) share: their common options,
the base model made ready (device, training size), the latent cache, and the final model file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from nanoldm.checkpoint.save import save_model
from nanoldm.config import PRESETS
from nanoldm.data.latents import LatentCache, load_or_build
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.infotext import model_hash
from nanoldm.text.tokenizer import CLIPTokenizer
from nanoldm.training.state import load_ema_weights


@dataclass(frozen=True)
class LatentOptions:
    """The options of every trainer on a frozen VAE's latent cache."""
    cond_drop: float = 0.1                         # probability of training on the empty prompt
    min_snr_gamma: float | None = None             # Min-SNR weighting min(SNR, G) / SNR; None: off
    cache: str | None = None                       # latent cache folder; None: OUT/cache
    sample_prompts: tuple[str, ...] | None = None  # prompts of the sample grid; None: the trainer's default
    device: str | None = None                      # None: cuda if available, else cpu

    def task_options(self) -> dict:
        """The :class:`~nanoldm.training.ldm.LDMTask` keywords these options set."""
        return {"cond_drop": self.cond_drop, "min_snr_gamma": self.min_snr_gamma}


def resolve_device(device: str | None) -> str:
    """``device``, or cuda if available, else cpu."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def random_model(preset: str, seed: int) -> LatentDiffusion:
    """Random networks of a preset (``PRESETS``) built from ``seed``, without moving the global RNG streams."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return LatentDiffusion.from_config(PRESETS[preset], tokenizer=CLIPTokenizer.default())


def prepare_model(model: LatentDiffusion, size: int | None, device: str | None) -> LatentDiffusion:
    """The base model on ``device``, its config's ``image_size`` set to the training size (None: its own)."""
    model = model.to(resolve_device(device))
    model.config = dataclasses.replace(model.config, image_size=size or model.config.image_size)
    return model


def latent_cache(model: LatentDiffusion, pixels: torch.Tensor, captions: list[str], options: LatentOptions,
                 out: Path, *, count_captions: bool = True) -> LatentCache:
    """The latent cache of the training images (built once, then read back); prints where it is."""
    cache, path = load_or_build(pixels, captions, model, options.cache or out / "cache", progress=True)
    distinct = f", {len(cache.contexts)} distinct captions" if count_captions else ""
    print(f"latent cache: {path} ({len(cache)} images{distinct})")
    return cache


def save_final(model: LatentDiffusion, checkpoint: Path, path: Path) -> None:
    """Write the whole model; the UNet takes the EMA weights from the training checkpoint when it has them."""
    load_ema_weights(model.unet, "unet", checkpoint)
    save_model(model, path, overwrite=True)


def base_identity(base: Path | None) -> tuple[str | None, str | None]:
    """What a finetune file records of its base model: A1111's short hash of the file (folders have none) and
    the file's name without suffix; (None, None) without a base file."""
    if base is None:
        return None, None
    return (model_hash(base) if base.is_file() else None), base.stem

"""``nanoldm train hypernetwork``: A1111's hypernetwork training on a frozen model.

The loss is the LDM's (:class:`~nanoldm.training.ldm.LDMTask`: cached latents, noise at a random step, eps
or v target), with a new :class:`~nanoldm.finetune.hypernetwork.Hypernetwork` hooked into every attention
layer at strength 1. The VAE, the text encoder and the UNet are all frozen; only the hypernetwork's MLPs
train, so they are the one module the training checkpoint holds and ``--resume`` restores. Captions are never
replaced by the empty prompt unless ``--cond-drop`` asks (A1111 does not drop them).

Widths: by default A1111's choice, the text context width plus the UNet's channel widths at attention
levels (SD 1: 768, 320, 640, 1280), derived from the base model's config; ``widths`` overrides.

Dropout (``--dropout``, ``--dropout-structure``) draws from torch's global RNG, which the training checkpoint
saves and restores, so a resumed run ends with the same weights as one never stopped.

At the end ``OUT/NAME.pt`` (A1111's file: loads there, and here weights-only) and ``OUT/NAME.safetensors``
are written, with EMA weights if ``--ema-decay`` is on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from nanoldm.data.latents import LatentCache
from nanoldm.data.sources import Captions, ImageSource
from nanoldm.finetune.hypernetwork import (Hypernetwork, HypernetworkOptions, apply_hypernetworks, default_widths,
                                           remove_hypernetworks)
from nanoldm.finetune.hypernetwork_file import save_hypernetwork
from nanoldm.model import LatentDiffusion
from nanoldm.training.latent_setup import LatentOptions, base_identity, latent_cache, prepare_model
from nanoldm.training.ldm import SAMPLE_PROMPTS, LDMTask, freeze
from nanoldm.training.loop import TrainConfig, train
from nanoldm.training.state import load_ema_weights


class HypernetworkTask(LDMTask):
    """The LDM task with the UNet frozen and ``hypernetwork`` hooked into it; ``modules()`` is the hypernetwork
    alone. The hooks stay on the UNet until :func:`remove_hypernetworks`."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, hypernetwork: Hypernetwork, *,
                 cond_drop: float = 0.0, sample_prompts: tuple[str, ...] = SAMPLE_PROMPTS, **kwargs):
        super().__init__(model, cache, cond_drop=cond_drop, sample_prompts=sample_prompts, **kwargs)
        freeze(model.unet)
        self.hypernetwork = hypernetwork
        hypernetwork.train()
        hypernetwork.requires_grad_(True)
        apply_hypernetworks(model.unet, [(hypernetwork, 1.0)])  # moves it to the UNet's device

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"hypernetwork": self.hypernetwork}

    def sample(self, step: int) -> Image.Image:
        """The LDM's sample row, drawn with the hypernetwork in eval mode (no dropout)."""
        self.hypernetwork.eval()
        try:
            return super().sample(step)
        finally:
            self.hypernetwork.train()


def clean_name(name: str) -> str:
    """A1111's rule for a hypernetwork's name (and file name): letters, digits and ``._- `` only."""
    cleaned = "".join(c for c in name if c.isalnum() or c in "._- ").strip()
    if not cleaned:
        raise ValueError(f"--name {name!r} has no usable characters (letters, digits, '._- ')")
    return cleaned


@dataclass(frozen=True)
class HypernetworkTraining:
    """What ``train hypernetwork`` trains: the name (A1111's rule applies), the MLPs' structure, the context widths
    to cover (None: the text width and the attention levels' channels); ``latent``: the options shared with the
    other latent trainers (no caption dropout by default)."""
    name: str
    structure: HypernetworkOptions = field(default_factory=HypernetworkOptions)
    widths: tuple[int, ...] | None = None
    latent: LatentOptions = field(default_factory=lambda: LatentOptions(cond_drop=0.0))

    def __post_init__(self):
        clean_name(self.name)  # a bad name fails before any loading


def train_hypernetwork(model: LatentDiffusion, data: ImageSource, loop: TrainConfig, options: HypernetworkTraining, *,
                       base: Path | None = None, resume: bool = False) -> Path:
    """Train a new hypernetwork on the frozen ``model`` (every image captioned). ``base``: the model's file,
    named in the A1111 file. Writes OUT/NAME.pt and OUT/NAME.safetensors; returns the .pt path."""
    name = clean_name(options.name)
    model = prepare_model(model, data.size, options.latent.device)
    widths = list(options.widths) if options.widths else default_widths(model.unet.cfg)
    images = data.load(model.config.image_size, seed=loop.seed, captions=Captions.REQUIRED)
    cache = latent_cache(model, images.pixels, images.captions, options.latent, Path(loop.out_dir))
    with torch.random.fork_rng():  # the same initial weights from the seed (a resumed run then loads its own)
        torch.manual_seed(loop.seed)
        checkpoint_hash, checkpoint_name = base_identity(base)
        hn = Hypernetwork(widths, options.structure, name=name, sd_checkpoint=checkpoint_hash,
                          sd_checkpoint_name=checkpoint_name)
    task = HypernetworkTask(model, cache, hn, **options.latent.task_options(),
                            sample_prompts=options.latent.sample_prompts or SAMPLE_PROMPTS)
    result = train(task, loop, resume=resume)
    remove_hypernetworks(model.unet)
    load_ema_weights(hn, "hypernetwork", result.checkpoint)
    hn.step = result.step
    out = Path(loop.out_dir)
    for suffix in (".pt", ".safetensors"):
        save_hypernetwork(hn, out / f"{name}{suffix}")
    print(f"hypernetwork: {out / f'{name}.pt'} and .safetensors (step {result.step}, loss {result.loss:.4f})")
    return out / f"{name}.pt"

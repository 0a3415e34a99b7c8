"""``train_vae``: train the autoencoder (a VAE, or with ``plain_ae`` a plain AE) from scratch, or finetune one.

Loss per step (Rombach et al. 2022, sec. 3.1 and app. G; CompVis ``LPIPSWithDiscriminator`` without the
perceptual term)::

    loss = mean_pixels |x - x_hat|^p  +  kl_weight * KL(q(z|x) || N(0, I)) / (3 * H * W)
           [ + disc_weight * (-mean D(x_hat)) + hinge loss of D ]     from step --disc-start, with --disc-weight > 0

``p`` is 1 (``--loss l1``) or 2 (``l2``). The KL is summed over latent dimensions and divided by the number of
pixel values, so ``kl_weight`` means what LDM's ``kl_weight`` means (LDM sums both terms over elements; we
divide both by 3HW): the default 1e-6 is LDM's. A plain AE has no KL (its posterior is a point mass).

Data: an image folder or the shapes world generated in memory (:class:`~nanoldm.data.sources.ImageSource`),
in [-1, 1]. A held-out slice (the last tenth of a folder, at most ``HOLDOUT_MAX`` images; for the shapes world
extra images past ``count``) never trains; its PSNR is printed and logged at the end.

The task and its measures are in :mod:`nanoldm.training.vae_task`, the pictures in
:mod:`nanoldm.training.vae_pictures`, the file format in :mod:`nanoldm.checkpoint.parts`;
``nanoldm train vae`` (:mod:`nanoldm.cli.train_vae`) builds this module's :func:`train_vae` call.

Output: ``OUT/vae.safetensors`` (:func:`~nanoldm.checkpoint.parts.save_vae`): the state dict, the
``AutoencoderConfig`` as JSON in the metadata, and in it the latent ``scale_factor`` = 1 / std of posterior
samples over the training data, as LDM computes it, so ``scale_factor * z`` has unit variance for diffusion.
With ``compare_ae`` (a ``vae.safetensors`` trained as a plain AE) it also writes
``OUT/latent_samples.png`` (:func:`sampleability_picture`).

Finetuning (``init``): start from an autoencoder, a ``vae.safetensors`` or the VAE of any model file or
folder :func:`~nanoldm.checkpoint.load.load_model` reads. With ``decoder_only`` the encoder stays frozen, so
the latent space and its ``scale_factor`` do not move and a UNet trained on them still works; only the decoder
learns, e.g. to draw a style that the encoder already tells apart (how SD's ft-MSE VAE was made). With a model
as ``init`` it also writes ``OUT/model.safetensors``: that model with the finetuned VAE.

The patch discriminator (:mod:`nanoldm.autoencoder.discriminator`) trains beside the autoencoder in the same
optimizer step: the autoencoder's adversarial term sees the discriminator's weights detached and the
discriminator's hinge loss sees the reconstructions detached, so each term moves only its own network. Before
``disc_start`` both terms are off (the autoencoder first learns to reconstruct). The discriminator is part of
the training checkpoint (exact resume), not of ``vae.safetensors``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.parts import is_vae_file, load_vae, save_vae
from nanoldm.checkpoint.save import save_model
from nanoldm.config import SHAPES_TINY, AutoencoderConfig
from nanoldm.data.sources import ImageSource, shapes_images
from nanoldm.model import LatentDiffusion
from nanoldm.training.loop import LOG, TrainConfig, train
from nanoldm.training.state import load_ema_weights
from nanoldm.training.vae_pictures import sampleability_picture
from nanoldm.training.vae_task import VAETask, check_loss, latent_scale, psnr

VAE_FILE = "vae.safetensors"
MODEL_FILE = "model.safetensors"
PICTURE_FILE = "latent_samples.png"
HOLDOUT_MAX = 256
SCALE_IMAGES = 1024  # training images whose latents set scale_factor


@dataclass(frozen=True)
class VAEOptions:
    """The loss (module docstring), the architecture's changes to SHAPES_TINY.vae (None: the preset's), and
    finetuning: ``init`` (a vae.safetensors or any model), ``decoder_only``; ``compare_ae``: a plain AE's file
    for the sampleability picture."""
    loss: str = "l1"
    kl_weight: float = 1e-6
    disc_weight: float = 0.0
    disc_start: int = 0
    plain_ae: bool = False
    base_channels: int | None = None
    channel_mult: tuple[int, ...] | None = None
    norm_groups: int | None = None
    init: str | None = None
    decoder_only: bool = False
    compare_ae: str | None = None

    def __post_init__(self):
        check_loss(self.loss)  # before any data is read

    def autoencoder_config(self) -> AutoencoderConfig:
        """SHAPES_TINY.vae with these changes."""
        changes = {"variational": not self.plain_ae, "base_channels": self.base_channels,
                   "channel_mult": self.channel_mult, "norm_groups": self.norm_groups}
        return dataclasses.replace(SHAPES_TINY.vae, **{k: v for k, v in changes.items() if v is not None})


def split_images(data: ImageSource, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) images in [-1, 1]: the shapes world's held out past ``count``, a folder's last tenth."""
    if data.is_shapes:
        held = max(1, min(HOLDOUT_MAX, data.count // 10))
        return (shapes_images(data.count, size, seed=seed).unit(),
                shapes_images(held, size, seed=seed, start=data.count).unit())
    images = data.load(size, seed=seed).unit()
    if len(images) < 2:
        raise ValueError(f"{data.path}: need at least 2 images (one to train on, one held out), found {len(images)}")
    held = max(1, min(HOLDOUT_MAX, len(images) // 10))
    return images[:-held], images[-held:]


def train_vae(data: ImageSource, loop: TrainConfig, options: VAEOptions = VAEOptions(), *,
              extra: Sequence[ImageSource] = (), resume: bool = False) -> Path:
    """Train (or finetune) an autoencoder on ``data`` and the ``extra`` sources (each holds out its own slice
    and gets its own held-out PSNR); size: ``data.size`` (default 32). Writes OUT/vae.safetensors (and
    OUT/model.safetensors when ``init`` is a model) and returns the VAE file's path."""
    ae = load_vae(options.compare_ae) if options.compare_ae else None  # fail before training, not after
    vae, model = initial_autoencoder(options)
    size, out = data.size or 32, Path(loop.out_dir)
    sources = [split_images(source, size, loop.seed) for source in (data, *extra)]
    images, held_out = (torch.cat([s[k] for s in sources]) for k in (0, 1))
    torch.manual_seed(loop.seed)
    if vae is None:
        vae = AutoencoderKL(options.autoencoder_config())
    if options.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    task = VAETask(vae, images, held_out, loss=options.loss, kl_weight=options.kl_weight,
                   disc_weight=options.disc_weight, disc_start=options.disc_start)
    result = train(task, loop, resume=resume)
    vae = finish(task, loop, result.step, keep_scale=options.decoder_only)
    if model is not None:
        model.config = dataclasses.replace(model.config, vae=vae.cfg)
        save_model(model, out / MODEL_FILE, overwrite=True)
        print(f"wrote {out / MODEL_FILE} (the --init model with this VAE)")
    for source, (_, held) in zip((data, *extra), sources if extra else []):
        print(f"{source.path}: held-out PSNR {psnr(vae, held):.2f} dB over {len(held)} images")
    print(f"held-out PSNR {psnr(vae, held_out):.2f} dB over {len(held_out)} images; "
          f"scale_factor {vae.cfg.scale_factor:.5f}; wrote {out / VAE_FILE}")
    if ae is not None:
        g = torch.Generator().manual_seed(loop.seed)
        sampleability_picture(vae, ae, 8, g, size=size).save(out / PICTURE_FILE)
        print(f"wrote {out / PICTURE_FILE} (top: the plain AE, bottom: this VAE, decoding the same N(0, I) latents)")
    return out / VAE_FILE


def initial_autoencoder(options: VAEOptions) -> tuple[AutoencoderKL | None, LatentDiffusion | None]:
    """``init``'s autoencoder (None: train a new one) and the model it came from (None for a vae.safetensors),
    with clear errors for options that contradict it."""
    if options.init is None:
        if options.decoder_only:
            raise ValueError("--decoder-only finetunes an existing decoder: it needs --init PATH")
        return None, None
    fixed = [flag for flag, value in (("--plain-ae", options.plain_ae), ("--base-channels", options.base_channels),
                                      ("--channel-mult", options.channel_mult), ("--norm-groups", options.norm_groups))
             if value not in (None, False)]
    if fixed:
        raise ValueError(f"--init takes the architecture from {options.init}; drop {', '.join(fixed)}")
    path = Path(options.init)
    if is_vae_file(path):
        return load_vae(path).train(), None
    model = load_model(path)
    return model.vae.train(), model  # trained in place: the model then holds the finetuned VAE


def finish(task: VAETask, cfg: TrainConfig, step: int, *, keep_scale: bool = False) -> AutoencoderKL:
    """EMA weights if any, the latent scale (unless ``keep_scale``: the encoder did not train), the held-out
    PSNR logged; writes OUT/vae.safetensors."""
    vae, out = task.vae, Path(cfg.out_dir)
    if cfg.ema_decay is not None:
        load_ema_weights(vae, "vae", out / "checkpoint.safetensors")
    vae.eval()
    scale = vae.cfg.scale_factor if keep_scale else latent_scale(vae, task.images[:SCALE_IMAGES], seed=cfg.seed)
    if not math.isfinite(scale):
        raise FloatingPointError(f"latent std gives scale_factor {scale}; the autoencoder did not train")
    vae.cfg = dataclasses.replace(vae.cfg, scale_factor=scale)
    value = psnr(vae, task.held_out)
    with open(out / LOG, "a") as log:
        log.write(json.dumps({"step": step, "held_out_psnr": value, "scale_factor": scale}) + "\n")
    save_vae(out / VAE_FILE, vae)
    return vae

"""``nanoldm train vae``: train the autoencoder (a VAE, or with ``--plain-ae`` a plain AE) from scratch.

Loss per step (Rombach et al. 2022, sec. 3.1 and app. G; CompVis ``LPIPSWithDiscriminator`` without the
perceptual term)::

    loss = mean_pixels |x - x_hat|^p  +  kl_weight * KL(q(z|x) || N(0, I)) / (3 * H * W)
           [ + disc_weight * (-mean D(x_hat)) + hinge loss of D ]     from step --disc-start, with --disc-weight > 0

``p`` is 1 (``--loss l1``) or 2 (``l2``). The KL is summed over latent dimensions and divided by the number of
pixel values, so ``kl_weight`` means what LDM's ``kl_weight`` means (LDM sums both terms over elements; we
divide both by 3HW): the default 1e-6 is LDM's. A plain AE has no KL (its posterior is a point mass).

Data: an image folder (``--data DIR``) or the shapes world generated in memory (``--data shapes --count N``),
in [-1, 1]. A held-out slice (the last tenth of a folder, at most ``HOLDOUT_MAX`` images; for the shapes world
extra images past ``--count``) never trains; its PSNR is printed and logged at the end.

Output: ``OUT/vae.safetensors`` (:func:`save_vae` / :func:`load_vae`): the state dict, the
``AutoencoderConfig`` as JSON in the metadata, and in it the latent ``scale_factor`` = 1 / std of posterior
samples over the training data, as LDM computes it, so ``scale_factor * z`` has unit variance for diffusion.
With ``--compare-ae AE`` (a ``vae.safetensors`` trained with ``--plain-ae``) it also writes
``OUT/latent_samples.png`` (:func:`sampleability_picture`).

Finetuning (``--init PATH``): start from an autoencoder, a ``vae.safetensors`` or the VAE of any model file or
folder :func:`~nanoldm.checkpoint.load.load_model` reads. With ``--decoder-only`` the encoder stays frozen, so
the latent space and its ``scale_factor`` do not move and a UNet trained on them still works; only the decoder
learns, e.g. to draw a style that the encoder already tells apart (how SD's ft-MSE VAE was made). With a model
as ``--init`` it also writes ``OUT/model.safetensors``: that model with the finetuned VAE.

The patch discriminator (:mod:`nanoldm.autoencoder.discriminator`) trains beside the autoencoder in the same
optimizer step: the autoencoder's adversarial term sees the discriminator's weights detached and the
discriminator's hinge loss sees the reconstructions detached, so each term moves only its own network. Before
``--disc-start`` both terms are off (the autoencoder first learns to reconstruct). The discriminator is part of
the training checkpoint (exact resume), not of ``vae.safetensors``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.autoencoder.discriminator import PatchDiscriminator
from nanoldm.checkpoint.parts import is_vae_file, load_vae, save_vae
from nanoldm.config import SHAPES_TINY, AutoencoderConfig
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.training.loop import LOG, TrainConfig, train

VAE_FILE = "vae.safetensors"
MODEL_FILE = "model.safetensors"
PICTURE_FILE = "latent_samples.png"
LOSSES = ("l1", "l2")
HOLDOUT_MAX = 256
SCALE_IMAGES = 1024  # training images whose latents set scale_factor


# --- data ------------------------------------------------------------------------------------

def shapes_images(count: int, *, size: int = 32, seed: int = 0, start: int = 0) -> torch.Tensor:
    """Shapes-world images ``start .. start + count - 1`` in [-1, 1]. Sizes the world does not render (e.g. 16)
    are drawn at 32 and area-averaged down. Shapes: -> (count, 3, size, size)."""
    from nanoldm.data.shapes import IMAGE_SIZES, ShapesWorld

    native = next((s for s in IMAGE_SIZES if s >= size), None)
    if native is None or native % size:
        raise ValueError(f"the shapes world renders {IMAGE_SIZES}; cannot make {size}x{size} images from them")
    world = ShapesWorld(size=native, seed=seed, count=start + count)
    pixels = np.stack([world.sample(i).image for i in range(start, start + count)])  # (N, S, S, 3)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return F.adaptive_avg_pool2d(x, size) if native != size else x


def folder_images(path: str, *, size: int) -> torch.Tensor:
    """Every readable image of a folder in [-1, 1]. Shapes: -> (N, 3, size, size)."""
    from nanoldm.data.folder import ImageFolder

    folder = ImageFolder(path, size=size)
    return torch.stack([folder[i]["image"] for i in range(len(folder))])


def load_data(data: str, *, size: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) images from ``data`` ("shapes" or a folder)."""
    if data == "shapes":
        held = max(1, min(HOLDOUT_MAX, count // 10))
        return shapes_images(count, size=size, seed=seed), shapes_images(held, size=size, seed=seed, start=count)
    images = folder_images(data, size=size)
    if len(images) < 2:
        raise ValueError(f"{data}: need at least 2 images (one to train on, one held out), found {len(images)}")
    held = max(1, min(HOLDOUT_MAX, len(images) // 10))
    return images[:-held], images[-held:]


# --- the task ---------------------------------------------------------------------------------

class VAETask:
    """The loop's :class:`~nanoldm.training.loop.Task` for an autoencoder. Shapes: images (N, 3, H, W)."""

    def __init__(self, vae: AutoencoderKL, images: torch.Tensor, held_out: torch.Tensor, *,
                 loss: str = "l1", kl_weight: float = 1e-6, disc_weight: float = 0.0, disc_start: int = 0):
        if loss not in LOSSES:
            raise ValueError(f"unknown reconstruction loss {loss!r}; choose one of {', '.join(LOSSES)}")
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
        return _rows([x, reconstruct(self.vae, x)])


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


# --- the sampleability picture ------------------------------------------------------------------

@torch.no_grad()
def sampleability_picture(vae: AutoencoderKL, ae: AutoencoderKL, n: int = 8, generator: torch.Generator | None = None,
                          *, size: int = 32, zoom: int = 2) -> Image.Image:
    """Random latents decoded by the plain AE (top row) and by the VAE (bottom row).

    "Random latent" means what a diffusion model would be asked to produce: eps ~ N(0, I) in each model's
    *scaled* latent space, i.e. z = eps / scale_factor. Both models thus get latents of their own overall
    scale (a fair test); the VAE's KL has pulled its posterior towards a Gaussian, so its decodings are
    shapes-like images, while the AE's latents fill an irregular set and random points decode to noise.
    Output: (label_width + n * size * zoom) x (2 * size * zoom) pixels, RGB.
    """
    h = size // vae.cfg.downsample_factor
    eps = torch.randn(n, vae.cfg.z_channels, h, h, generator=generator)
    rows = [m.eval().decode(eps / m.cfg.scale_factor).clamp(-1, 1) for m in (ae, vae)]
    return _rows(rows, labels=["AE", "VAE"], zoom=zoom)


def _rows(rows: list[torch.Tensor], labels: list[str] | None = None, zoom: int = 2) -> Image.Image:
    """A grid, one row per (n, 3, H, W) tensor, with an optional text label left of each row."""
    n, (H, W) = rows[0].shape[0], rows[0].shape[-2:]
    tile_w, tile_h = W * zoom, H * zoom
    left = 40 if labels else 0
    grid = Image.new("RGB", (left + n * tile_w, len(rows) * tile_h), "white")
    draw = ImageDraw.Draw(grid)
    for r, images in enumerate(rows):
        for c, im in enumerate(tensor_to_pil(images)):
            grid.paste(im.resize((tile_w, tile_h), Image.Resampling.NEAREST), (left + c * tile_w, r * tile_h))
        if labels:
            draw.text((4, r * tile_h + tile_h // 2 - 5), labels[r], fill="black")
    return grid


# --- the command ------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    from nanoldm.cli.train import add_data_arguments, add_loop_arguments

    p = sub.add_parser("vae", help="the autoencoder (VAE, or a plain AE with --plain-ae)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, count=2000)
    p.add_argument("--extra-data", nargs="+", default=[], metavar="DIR",
                   help="more image folders to train on besides --data (e.g. another style); each holds out its own "
                        "last tenth and gets its own held-out PSNR")
    p.add_argument("--plain-ae", action="store_true", help="a plain autoencoder: no sampling, no KL")
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--disc-weight", type=float, default=0.0,
                   help="weight of the patch discriminator's adversarial term (0: no discriminator)")
    p.add_argument("--disc-start", type=int, default=0, help="step from which the discriminator trains")
    p.add_argument("--loss", default="l1", help="reconstruction loss: l1 or l2")
    p.add_argument("--base-channels", type=int, default=None, help="default: the shapes_tiny preset's")
    p.add_argument("--channel-mult", default=None, help="e.g. 1,2,4 (downsampling factor 4)")
    p.add_argument("--norm-groups", type=int, default=None)
    p.add_argument("--compare-ae", default=None, metavar="AE",
                   help="a plain AE's vae.safetensors: also write OUT/latent_samples.png")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="finetune this autoencoder: a vae.safetensors, or a model's VAE (then OUT/model.safetensors "
                        "is that model with the finetuned VAE)")
    p.add_argument("--decoder-only", action="store_true",
                   help="with --init: train the decoder alone; the encoder, the latent space and scale_factor stay")
    add_loop_arguments(p, steps=2000, batch_size=32, lr=1e-3)
    p.set_defaults(run=run)


def autoencoder_config(args: argparse.Namespace) -> AutoencoderConfig:
    """SHAPES_TINY.vae with the command line's changes."""
    changes = {"variational": not args.plain_ae}
    if args.base_channels is not None:
        changes["base_channels"] = args.base_channels
    if args.channel_mult is not None:
        changes["channel_mult"] = tuple(int(m) for m in args.channel_mult.split(","))
    if args.norm_groups is not None:
        changes["norm_groups"] = args.norm_groups
    return dataclasses.replace(SHAPES_TINY.vae, **changes)


def run(args: argparse.Namespace) -> int:
    from nanoldm.cli.train import loop_config

    if args.loss not in LOSSES:
        raise ValueError(f"unknown reconstruction loss {args.loss!r}; choose one of {', '.join(LOSSES)}")
    ae = load_vae(args.compare_ae) if args.compare_ae else None  # fail before training, not after
    vae, model = initial_autoencoder(args)
    cfg = loop_config(args)
    sources = [load_data(args.data, size=args.size, count=args.count, seed=args.seed)]
    sources += [load_data(d, size=args.size, count=args.count, seed=args.seed) for d in args.extra_data]
    images, held_out = (torch.cat([s[k] for s in sources]) for k in (0, 1))
    torch.manual_seed(cfg.seed)
    if vae is None:
        vae = AutoencoderKL(autoencoder_config(args))
    if args.decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    task = VAETask(vae, images, held_out, loss=args.loss,
                   kl_weight=args.kl_weight, disc_weight=args.disc_weight, disc_start=args.disc_start)
    result = train(task, cfg, resume=args.resume)
    vae = finish(task, cfg, result.step, keep_scale=args.decoder_only)
    if model is not None:
        from nanoldm.checkpoint.save import save_model

        model.config = dataclasses.replace(model.config, vae=vae.cfg)
        save_model(model, Path(cfg.out_dir) / MODEL_FILE, overwrite=True)
        print(f"wrote {Path(cfg.out_dir) / MODEL_FILE} (the --init model with this VAE)")
    for name, (_, held) in zip([args.data, *args.extra_data], sources if args.extra_data else []):
        print(f"{name}: held-out PSNR {psnr(vae, held):.2f} dB over {len(held)} images")
    print(f"held-out PSNR {psnr(vae, held_out):.2f} dB over {len(held_out)} images; "
          f"scale_factor {vae.cfg.scale_factor:.5f}; wrote {Path(cfg.out_dir) / VAE_FILE}")
    if ae is not None:
        g = torch.Generator().manual_seed(cfg.seed)
        path = Path(cfg.out_dir) / PICTURE_FILE
        sampleability_picture(vae, ae, 8, g, size=args.size).save(path)
        print(f"wrote {path} (top: the plain AE, bottom: this VAE, decoding the same N(0, I) latents)")
    return 0


def initial_autoencoder(args: argparse.Namespace) -> tuple[AutoencoderKL | None, object | None]:
    """``--init``'s autoencoder (None: train a new one) and the model it came from (None for a vae.safetensors),
    with clear errors for options that contradict it."""
    if args.init is None:
        if args.decoder_only:
            raise ValueError("--decoder-only finetunes an existing decoder: it needs --init PATH")
        return None, None
    fixed = [flag for flag, value in (("--plain-ae", args.plain_ae), ("--base-channels", args.base_channels),
                                      ("--channel-mult", args.channel_mult), ("--norm-groups", args.norm_groups))
             if value not in (None, False)]
    if fixed:
        raise ValueError(f"--init takes the architecture from {args.init}; drop {', '.join(fixed)}")
    path = Path(args.init)
    if is_vae_file(path):
        return load_vae(path).train(), None
    from nanoldm.checkpoint.load import load_model

    model = load_model(path)
    return model.vae.train(), model  # trained in place: the model then holds the finetuned VAE


def finish(task: VAETask, cfg: TrainConfig, step: int, *, keep_scale: bool = False) -> AutoencoderKL:
    """EMA weights if any, the latent scale (unless ``keep_scale``: the encoder did not train), the held-out
    PSNR logged; writes OUT/vae.safetensors."""
    vae, out = task.vae, Path(cfg.out_dir)
    if cfg.ema_decay is not None:
        from nanoldm.training.state import load_ema_weights

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

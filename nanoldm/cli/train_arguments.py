"""The flags every ``nanoldm train`` trainer shares, and the typed library options they fill
(:class:`~nanoldm.training.loop.TrainConfig`, :class:`~nanoldm.data.sources.ImageSource`,
:class:`~nanoldm.training.latent_setup.LatentOptions`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from nanoldm.builtin import builtin_model_path
from nanoldm.data.sources import ImageSource
from nanoldm.training.latent_setup import LatentOptions
from nanoldm.training.loop import TrainConfig


def add_data_arguments(p: argparse.ArgumentParser, *, count: int, size: int | None = 32) -> None:
    """Where the training images come from: a folder, or the shapes world rendered in memory."""
    p.add_argument("--data", required=True, help="an image folder (captions: .txt or metadata.jsonl), or 'shapes'")
    p.add_argument("--count", type=int, default=count, help="shapes-world training images (--data shapes)")
    p.add_argument("--size", type=int, default=size,
                   help="image side in pixels" + ("" if size else " (default: the model's)"))


def image_source(args: argparse.Namespace) -> ImageSource:
    """What :func:`add_data_arguments` defines."""
    return ImageSource(args.data, count=args.count, size=args.size)


def add_loop_arguments(p: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float) -> None:
    """The options every trainer shares (they fill a ``TrainConfig``)."""
    p.add_argument("--out", required=True, help="run folder: checkpoint, log.jsonl, samples/")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--sample-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")


def loop_config(args: argparse.Namespace) -> TrainConfig:
    """What :func:`add_loop_arguments` defines (but ``--resume``)."""
    return TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                       warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, bf16=args.bf16,
                       log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                       sample_every=args.sample_every, seed=args.seed, out_dir=args.out)


def add_base_model_argument(p: argparse.ArgumentParser, *, role: str) -> None:
    """``--model``, defaulting to the built-in shapes model, for finetuning trainers."""
    p.add_argument("--model", default=None, help=f"the base model: our .safetensors, an SD 1.x file or a diffusers "
                                                 f"folder (default: the built-in shapes model); {role}")


def base_model_path(args: argparse.Namespace) -> Path:
    """``--model``, or the built-in model's file."""
    return Path(args.model) if args.model else builtin_model_path()


def add_latent_arguments(p: argparse.ArgumentParser, *, cond_drop: float) -> None:
    """The options of every trainer on a frozen VAE's latent cache (ldm, embedding, hypernetwork)."""
    p.add_argument("--cond-drop", type=float, default=cond_drop, help="probability of training on the empty prompt")
    p.add_argument("--cache", default=None, help="latent cache folder (default: OUT/cache)")
    p.add_argument("--min-snr-gamma", type=float, default=None, metavar="G",
                   help="Min-SNR loss weighting min(SNR, G) / SNR (Hang et al. 2023; 5 is usual); default: off")
    p.add_argument("--sample-prompt", action="append", default=None, help="prompt of the sample grid (repeat)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")


def latent_options(args: argparse.Namespace) -> LatentOptions:
    """What :func:`add_latent_arguments` defines."""
    return LatentOptions(cond_drop=args.cond_drop, min_snr_gamma=args.min_snr_gamma, cache=args.cache,
                         sample_prompts=tuple(args.sample_prompt) if args.sample_prompt else None, device=args.device)

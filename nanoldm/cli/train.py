"""``nanoldm train vae|clip|ldm|embedding|hypernetwork|all ...``: one sub-command per trainer. Each trainer
module in ``nanoldm.training`` defines ``register(sub)`` (adds its sub-parser, sets ``run``); this file groups them."""
from __future__ import annotations

import argparse

from nanoldm.training import all as all_stages
from nanoldm.training import clip, embedding, hypernetwork, ldm, vae

TRAINERS: tuple = (vae, clip, ldm, embedding, hypernetwork, all_stages)  # modules, each with register(sub)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a part of the model (vae, clip, ldm), finetune one (embedding, "
                                      "hypernetwork), or everything from nothing (all)")
    trainers = p.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for trainer in TRAINERS:
        trainer.register(trainers)


def add_data_arguments(p: argparse.ArgumentParser, *, count: int, size: int | None = 32) -> None:
    """Where the training images come from: a folder, or the shapes world rendered in memory."""
    p.add_argument("--data", required=True, help="an image folder (captions: .txt or metadata.jsonl), or 'shapes'")
    p.add_argument("--count", type=int, default=count, help="shapes-world training images (--data shapes)")
    p.add_argument("--size", type=int, default=size,
                   help="image side in pixels" + ("" if size else " (default: the model's)"))


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


def loop_config(args: argparse.Namespace):
    from nanoldm.training.loop import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                       warmup_steps=args.warmup_steps, ema_decay=args.ema_decay, bf16=args.bf16,
                       log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                       sample_every=args.sample_every, seed=args.seed, out_dir=args.out)

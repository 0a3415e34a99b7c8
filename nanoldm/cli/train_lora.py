"""``nanoldm train lora``: the flags of :func:`nanoldm.training.lora.train_lora`, with kohya's names as aliases
(``--network-dim``, ``--network-alpha``, ``--conv-dim``, ``--caption-dropout-rate``,
``--output-name``)."""
from __future__ import annotations

import argparse

from nanoldm.checkpoint.load import load_model
from nanoldm.cli.train_arguments import (add_base_model_argument, add_data_arguments, add_latent_arguments,
                                         add_loop_arguments, base_model_path, image_source, latent_options,
                                         loop_config)
from nanoldm.finetune.lora_file import FORMATS
from nanoldm.training.lora import LoraTraining, train_lora
from nanoldm.training.lora_network import TARGETS, LoraSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lora", help="a LoRA on a frozen model (writes OUT/NAME.safetensors, kohya's format)")
    add_data_arguments(p, count=2000, size=None)
    add_base_model_argument(p, role="it stays frozen")
    p.add_argument("--name", "--output-name", default="lora", help="the file's name; <lora:NAME:1> uses it")
    p.add_argument("--rank", "--network-dim", type=int, default=8, help="rank of the Linear and 1x1 conv layers")
    p.add_argument("--alpha", "--network-alpha", type=float, default=None,
                   help="scale = alpha / rank (default: the rank, scale 1)")
    p.add_argument("--targets", default="unet", help=f"comma-separated, from {', '.join(TARGETS)}")
    p.add_argument("--conv-rank", "--conv-dim", type=int, default=None,
                   help="LoCon: also the UNet's 3x3 convolutions, at this rank (default: not adapted)")
    p.add_argument("--conv-alpha", type=float, default=None, help="alpha of the 3x3 convolutions (default: --conv-rank)")
    p.add_argument("--rank-dropout", type=float, default=None,
                   help="drop each rank channel with this probability while training (kohya's rank_dropout)")
    p.add_argument("--format", choices=FORMATS, default="kohya",
                   help="kohya (A1111, ComfyUI) or diffusers (PEFT layout of load_lora_weights)")
    add_latent_arguments(p, cond_drop=0.0)
    p.add_argument("--caption-dropout-rate", dest="cond_drop", type=float, help="kohya's name of --cond-drop")
    add_loop_arguments(p, steps=1500, batch_size=8, lr=1e-3)
    p.set_defaults(run=run)


def training_options(args: argparse.Namespace) -> LoraTraining:
    """The typed options of the flags; bad ones fail here, before any loading."""
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    spec = LoraSpec(rank=args.rank, alpha=args.alpha, targets=targets, conv_rank=args.conv_rank,
                    conv_alpha=args.conv_alpha, rank_dropout=args.rank_dropout)
    return LoraTraining(name=args.name, spec=spec, format=args.format, latent=latent_options(args))


def run(args: argparse.Namespace) -> int:
    options = training_options(args)
    base = base_model_path(args)
    train_lora(load_model(base), image_source(args), loop_config(args), options, base=base, resume=args.resume)
    return 0

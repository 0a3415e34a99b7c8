"""``nanoldm train vae|clip|ldm|embedding|hypernetwork|lora|all ...``: one sub-command per trainer. Each
``cli/train_*.py`` defines ``register(sub)`` (adds its sub-parser, sets ``run``, which builds the typed options
and calls the library's trainer); this file groups them."""
from __future__ import annotations

import argparse

from nanoldm.cli import (train_all, train_clip, train_embedding, train_hypernetwork, train_ldm, train_lora,
                        train_vae)

TRAINERS: tuple = (train_vae, train_clip, train_ldm, train_embedding, train_hypernetwork, train_lora, train_all)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a part of the model (vae, clip, ldm), finetune one (embedding, "
                                      "hypernetwork, lora), or everything from nothing (all)")
    trainers = p.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for trainer in TRAINERS:
        trainer.register(trainers)

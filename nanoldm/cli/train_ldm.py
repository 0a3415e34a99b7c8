"""``nanoldm train ldm``: the flags of :func:`nanoldm.training.ldm_trainer.train_ldm`; the base model is
``--model PATH``, random networks of the ``--init`` preset built from ``--seed``, or (neither given) the built-in
model, which is how the class, layout and inpainting recipes start."""
from __future__ import annotations

import argparse

from nanoldm.builtin import builtin_model_path
from nanoldm.checkpoint.load import load_model
from nanoldm.cli.train_arguments import (add_data_arguments, add_latent_arguments, add_loop_arguments, image_source,
                                         latent_options, loop_config)
from nanoldm.config import PRESETS, PredictionType
from nanoldm.training.latent_setup import random_model
from nanoldm.training.ldm_conditions import Condition
from nanoldm.training.ldm_trainer import LDMOptions, train_ldm

PREDICTIONS = {"eps": PredictionType.EPSILON, "v": PredictionType.V}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ldm", help="a text-conditioned latent diffusion UNet (frozen VAE and text encoder)")
    add_data_arguments(p, count=2000, size=None)
    base = p.add_mutually_exclusive_group()
    base.add_argument("--model", default=None, help="base model whose VAE and text encoder are used (and UNet "
                                                    "architecture; its UNet weights are the starting point); "
                                                    "default: the built-in model")
    base.add_argument("--init", choices=sorted(PRESETS), default=None,
                      help="instead of --model: random networks of this preset (smoke tests only)")
    p.add_argument("--prediction", choices=sorted(PREDICTIONS), default="eps")
    p.add_argument("--condition", choices=[c.value for c in Condition], default="text",
                   help="text: captions; class / layout: a jointly trained condition module (saved to OUT/"
                        "condition.safetensors) replaces the text encoder; mask: an inpainting UNet (4+1+4 inputs)")
    add_latent_arguments(p, cond_drop=0.1)
    add_loop_arguments(p, steps=5000, batch_size=64, lr=1e-4)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = random_model(args.init, args.seed) if args.init else load_model(args.model or builtin_model_path())
    options = LDMOptions(prediction=PREDICTIONS[args.prediction], condition=Condition(args.condition),
                         latent=latent_options(args))
    train_ldm(model, image_source(args), loop_config(args), options, resume=args.resume)
    return 0

"""``nanoldm train embedding``: the flags of :func:`nanoldm.training.embedding.train_embedding`."""
from __future__ import annotations

import argparse

from nanoldm.checkpoint.load import load_model
from nanoldm.cli.train_arguments import (add_base_model_argument, add_data_arguments, add_latent_arguments,
                                         add_loop_arguments, base_model_path, image_source, latent_options,
                                         loop_config)
from nanoldm.training.embedding import EmbeddingOptions, train_embedding


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embedding", help="a textual-inversion embedding: new token vectors for a frozen model")
    add_data_arguments(p, count=100, size=None)
    add_base_model_argument(p, role="only the new token's vectors train")
    p.add_argument("--token", required=True, help='the new word, e.g. "<cat-toy>"')
    p.add_argument("--init-word", required=True, help="text whose token embeddings start the vectors; replaced "
                                                      "by the token in the captions")
    p.add_argument("--vectors", type=int, default=1, help="vectors per token (N)")
    add_latent_arguments(p, cond_drop=0.0)  # sample prompts default to the first training captions
    add_loop_arguments(p, steps=3000, batch_size=4, lr=5e-3)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = EmbeddingOptions(token=args.token, init_word=args.init_word, vectors=args.vectors,
                               latent=latent_options(args))
    base = base_model_path(args)
    train_embedding(load_model(base), image_source(args), loop_config(args), options, base=base, resume=args.resume)
    return 0

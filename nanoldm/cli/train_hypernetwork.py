"""``nanoldm train hypernetwork``: the flags of :func:`nanoldm.training.hypernetwork.train_hypernetwork`."""
from __future__ import annotations

import argparse

from nanoldm.checkpoint.load import load_model
from nanoldm.cli.train_arguments import (add_base_model_argument, add_data_arguments, add_latent_arguments,
                                         add_loop_arguments, base_model_path, image_source, latent_options,
                                         loop_config)
from nanoldm.finetune.hypernetwork import WEIGHT_INITS, HypernetworkOptions
from nanoldm.training.hypernetwork import HypernetworkTraining, train_hypernetwork


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hypernetwork", help="an A1111 hypernetwork on a frozen model (writes OUT/NAME.pt)")
    add_data_arguments(p, count=2000, size=None)
    add_base_model_argument(p, role="it stays frozen")
    p.add_argument("--name", required=True, help="the hypernetwork's name (and file name); <hypernet:NAME:1> uses it")
    p.add_argument("--layer-structure", default="1,2,1", help="MLP widths as multiples of the context width")
    p.add_argument("--activation", default="linear", metavar="NAME",
                   help="linear, relu, leakyrelu, elu, swish, tanh, sigmoid (or any torch.nn activation, lowercased)")
    p.add_argument("--layer-norm", action="store_true", help="a LayerNorm after each Linear")
    p.add_argument("--activate-output", action="store_true", help="the activation after the last Linear too")
    p.add_argument("--dropout", action="store_true", help="dropout (A1111's 0.3 after hidden layers by default)")
    p.add_argument("--dropout-structure", default=None, help="dropout probability per layer, e.g. 0,0.1,0")
    p.add_argument("--weight-init", choices=WEIGHT_INITS, default="Normal")
    p.add_argument("--widths", default=None, help="context widths to cover, e.g. 768,320,640,1280 (default: "
                                                  "the text width and the attention levels' channels)")
    add_latent_arguments(p, cond_drop=0.0)
    add_loop_arguments(p, steps=2000, batch_size=4, lr=1e-5)
    p.set_defaults(run=run)


def parse_numbers(text: str, what: str) -> tuple[float, ...]:
    """"1, 2, 1" -> (1.0, 2.0, 1.0), with a clear error."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def training_options(args: argparse.Namespace) -> HypernetworkTraining:
    """The typed options of the flags; bad ones fail here, before any loading."""
    dropout = parse_numbers(args.dropout_structure, "--dropout-structure") if args.dropout_structure else None
    if dropout is not None and not args.dropout:
        raise ValueError("--dropout-structure needs --dropout")
    structure = HypernetworkOptions(layer_structure=parse_numbers(args.layer_structure, "--layer-structure"),
                                    activation_func=args.activation, weight_init=args.weight_init,
                                    add_layer_norm=args.layer_norm, use_dropout=args.dropout,
                                    dropout_structure=dropout, activate_output=args.activate_output,
                                    last_layer_dropout=args.dropout)
    widths = tuple(int(w) for w in parse_numbers(args.widths, "--widths")) if args.widths else None
    return HypernetworkTraining(name=args.name, structure=structure, widths=widths, latent=latent_options(args))


def run(args: argparse.Namespace) -> int:
    options = training_options(args)
    base = base_model_path(args)
    train_hypernetwork(load_model(base), image_source(args), loop_config(args), options, base=base,
                       resume=args.resume)
    return 0

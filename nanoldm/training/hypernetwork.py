"""``nanoldm train hypernetwork``: A1111's hypernetwork training on a frozen model.

The loss is the LDM's (:class:`~nanoldm.training.ldm.LDMTask`: cached latents, noise at a random step, eps
or v target), with a new :class:`~nanoldm.finetune.hypernetwork.Hypernetwork` hooked into every attention
layer at strength 1. The VAE, the text encoder and the UNet are all frozen; only the hypernetwork's MLPs
train, so they are the one module the training checkpoint holds and ``--resume`` restores. Captions are never
replaced by the empty prompt unless ``--cond-drop`` asks (A1111 does not drop them).

Widths: by default A1111's choice, the text context width plus the UNet's channel widths at attention
levels (SD 1: 768, 320, 640, 1280), derived from the base model's config; ``--widths`` overrides.

Dropout (``--dropout``, ``--dropout-structure``) draws from torch's global RNG, which the training checkpoint
saves and restores, so a resumed run ends with the same weights as one never stopped.

At the end ``OUT/NAME.pt`` (A1111's file: loads there, and here weights-only) and ``OUT/NAME.safetensors``
are written, with EMA weights if ``--ema-decay`` is on.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from PIL import Image

from nanoldm.data.latents import LatentCache
from nanoldm.finetune.hypernetwork import (WEIGHT_INITS, Hypernetwork, HypernetworkOptions, apply_hypernetworks,
                                           default_widths, remove_hypernetworks)
from nanoldm.model import LatentDiffusion
from nanoldm.training.ldm import (SAMPLE_PROMPTS, LDMTask, add_base_model_argument, add_latent_arguments, freeze,
                                  latent_loss_options)


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


def parse_numbers(text: str, what: str) -> tuple[float, ...]:
    """"1, 2, 1" -> (1.0, 2.0, 1.0), with a clear error."""
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def clean_name(name: str) -> str:
    """A1111's rule for a hypernetwork's name (and file name): letters, digits and ``._- `` only."""
    cleaned = "".join(c for c in name if c.isalnum() or c in "._- ").strip()
    if not cleaned:
        raise ValueError(f"--name {name!r} has no usable characters (letters, digits, '._- ')")
    return cleaned


def options_from_args(args: argparse.Namespace) -> HypernetworkOptions:
    dropout = parse_numbers(args.dropout_structure, "--dropout-structure") if args.dropout_structure else None
    if dropout is not None and not args.dropout:
        raise ValueError("--dropout-structure needs --dropout")
    return HypernetworkOptions(layer_structure=parse_numbers(args.layer_structure, "--layer-structure"),
                               activation_func=args.activation, weight_init=args.weight_init,
                               add_layer_norm=args.layer_norm, use_dropout=args.dropout, dropout_structure=dropout,
                               activate_output=args.activate_output, last_layer_dropout=args.dropout)


def register(sub: argparse._SubParsersAction) -> None:
    from nanoldm.cli.train import add_data_arguments, add_loop_arguments

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


def run(args: argparse.Namespace) -> None:
    from nanoldm.builtin import builtin_model_path
    from nanoldm.checkpoint.load import load_model
    from nanoldm.cli.train import loop_config
    from nanoldm.data.latents import load_or_build
    from nanoldm.finetune.hypernetwork_file import save_hypernetwork
    from nanoldm.pipelines.infotext import model_hash
    from nanoldm.training.ldm import load_data
    from nanoldm.training.loop import train
    from nanoldm.training.state import load_ema_weights

    name, options = clean_name(args.name), options_from_args(args)  # bad options fail before any loading
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.model = args.model or str(builtin_model_path())
    model = load_model(args.model).to(device)
    size = args.size or model.config.image_size
    model.config = dataclasses.replace(model.config, image_size=size)
    widths = [int(w) for w in parse_numbers(args.widths, "--widths")] if args.widths else \
        default_widths(model.unet.cfg)
    pixels, captions = load_data(args.data, size, count=args.count, seed=args.seed)
    cache, path = load_or_build(pixels, captions, model, args.cache or Path(args.out) / "cache", progress=True)
    print(f"latent cache: {path} ({len(cache)} images, {len(cache.contexts)} distinct captions)")
    base = Path(args.model)
    with torch.random.fork_rng():  # the same initial weights from --seed (a resumed run then loads its own)
        torch.manual_seed(args.seed)
        hn = Hypernetwork(widths, options, name=name, sd_checkpoint=model_hash(base) if base.is_file() else None,
                          sd_checkpoint_name=base.stem)
    task = HypernetworkTask(model, cache, hn, **latent_loss_options(args),
                            sample_prompts=tuple(args.sample_prompt) if args.sample_prompt else SAMPLE_PROMPTS)
    result = train(task, loop_config(args), resume=args.resume)
    remove_hypernetworks(model.unet)
    load_ema_weights(hn, "hypernetwork", result.checkpoint)
    hn.step = result.step
    out = Path(args.out)
    for suffix in (".pt", ".safetensors"):
        save_hypernetwork(hn, out / f"{name}{suffix}")
    print(f"hypernetwork: {out / f'{name}.pt'} and .safetensors (step {result.step}, loss {result.loss:.4f})")

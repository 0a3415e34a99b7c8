"""``nanoldm train vae``: the flags of :func:`nanoldm.training.vae.train_vae` (the module's docstring is the
command's description)."""
from __future__ import annotations

import argparse

from nanoldm.cli.train_arguments import add_data_arguments, add_loop_arguments, image_source, loop_config
from nanoldm.data.sources import ImageSource
from nanoldm.training import vae


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vae", help="the autoencoder (VAE, or a plain AE with --plain-ae)",
                       description=vae.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def vae_options(args: argparse.Namespace) -> vae.VAEOptions:
    mult = tuple(int(m) for m in args.channel_mult.split(",")) if args.channel_mult is not None else None
    return vae.VAEOptions(loss=args.loss, kl_weight=args.kl_weight, disc_weight=args.disc_weight,
                          disc_start=args.disc_start, plain_ae=args.plain_ae, base_channels=args.base_channels,
                          channel_mult=mult, norm_groups=args.norm_groups, init=args.init,
                          decoder_only=args.decoder_only, compare_ae=args.compare_ae)


def run(args: argparse.Namespace) -> int:
    extra = tuple(ImageSource(d, count=args.count, size=args.size) for d in args.extra_data)
    vae.train_vae(image_source(args), loop_config(args), vae_options(args), extra=extra, resume=args.resume)
    return 0

"""``nanoldm train all``: the flags of :class:`nanoldm.training.recipe.RecipeOptions` (the recipe's docstring is
the command's description)."""
from __future__ import annotations

import argparse
import dataclasses

from nanoldm.evaluation.report import DEFAULT_HELD_OUT_TEXT
from nanoldm.training import recipe
from nanoldm.training.recipe import ONE_STAGE_STYLES, RecipeOptions, run_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("all", help="the whole chain: data -> CLIP -> captions -> VAE -> LDM -> eval",
                       description=recipe.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (one subfolder per stage)")
    p.add_argument("--count", type=int, default=20000, help="shapes-world images")
    p.add_argument("--uncaptioned", type=float, default=0.25, help="share of the images left for the captioner")
    p.add_argument("--partial", type=float, default=0.5,
                   help="chance that a caption leaves out each of a lone object's size and position (shapes export "
                        "--partial), so the model learns that an unnamed attribute is free; 0: full captions")
    p.add_argument("--held-out", default=DEFAULT_HELD_OUT_TEXT,
                   help="(colour, shape) combinations never drawn for training; '' for none")
    p.add_argument("--generic-shape", default="", choices=("star", "heart", ""),
                   help="an extra shape drawn but captioned only 'shape' (for textual inversion); '' for none")
    p.add_argument("--generic-share", type=float, default=0.2,
                   help="share of the base shapes also captioned 'shape'")
    p.add_argument("--generic-weight", type=float, default=None,
                   help="how often the generic shape is drawn relative to each base shape (default: --generic-share)")
    p.add_argument("--vae-style", default="dark", choices=ONE_STAGE_STYLES,
                   help="a style exported for the VAE only; '' for none")
    p.add_argument("--vae-style-share", type=float, default=0.5,
                   help="images in the VAE-only style, as a share of --count")
    p.add_argument("--decoder-steps", type=int, default=500,
                   help="steps of the decoder-only VAE finetune after the LDM (0: none)")
    p.add_argument("--decoder-style", default="paper", choices=ONE_STAGE_STYLES,
                   help="a style only the decoder finetune sees; '' for none")
    p.add_argument("--decoder-style-share", type=float, default=0.3,
                   help="images in the decoder-only style, as a share of --count")
    p.add_argument("--clip-steps", type=int, default=1200)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--ldm-steps", type=int, default=2500)
    p.add_argument("--ldm-batch-size", type=int, default=64)
    p.add_argument("--ldm-lr", type=float, default=1e-3)
    p.add_argument("--ldm-min-snr-gamma", type=float, default=5.0, metavar="G",
                   help="Min-SNR loss weighting of the LDM stage (train ldm --min-snr-gamma); 0: off")
    p.add_argument("--eval-prompts", type=int, default=96,
                   help="one-object prompts of the final eval (two-object: 2/3 as many; each held-out group: half)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="for the LDM stage (default: cuda if available, else cpu)")
    p.set_defaults(run=run)


def recipe_options(args: argparse.Namespace) -> RecipeOptions:
    """Every flag is a field of the same name."""
    return RecipeOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RecipeOptions)})


def run(args: argparse.Namespace) -> int:
    run_recipe(recipe_options(args))
    return 0

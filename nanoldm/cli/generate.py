"""``nanoldm txt2img | img2img | inpaint``: generate PNGs (with A1111 infotext) into ``--out``.

``txt2img --from-png FILE`` / ``--infotext TEXT`` start from an infotext's settings (``pipelines/from_infotext.py``);
the flags given on the command line win over them, so the parser records which ones were given (``_given``).

Imports are at the top: ``import nanoldm`` already loads the pipeline (and torch), so importing them lazily
would not make ``nanoldm --help`` faster."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from nanoldm.checkpoint.formats import check_folder
from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.finetune.textual_inversion import load_embeddings
from nanoldm.options import IMG2IMG_STRENGTH, INPAINT_STRENGTH, GenerateOptions
from nanoldm.pipelines import outputs
from nanoldm.pipelines.from_infotext import InfotextWarning, infotext_of, read_infotext
from nanoldm.pipelines.images import load_image
from nanoldm.pipelines.pipeline import load_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("txt2img", help="generate images from a prompt")
    p.add_argument("prompt", nargs="?", default=None, help="required unless --from-png or --infotext gives it")
    g = p.add_argument_group("infotext in, image out").add_mutually_exclusive_group()
    g.add_argument("--from-png", default=None, metavar="FILE",
                   help="start from the settings in FILE's A1111 infotext (A1111, ComfyUI with A1111 metadata, "
                        "nanoldm); the flags given here override them")
    g.add_argument("--infotext", default=None, metavar="TEXT", help="the same, from an infotext's text")
    _common(p, default_out="outputs/txt2img", hires=True)
    _record_given(p)
    p.set_defaults(run=run)

    p = sub.add_parser("img2img", help="regenerate an image guided by a prompt")
    p.add_argument("image")
    p.add_argument("prompt")
    _common(p, default_out="outputs/img2img", strength=IMG2IMG_STRENGTH)
    p.set_defaults(run=run)

    p = sub.add_parser("inpaint", help="regenerate the white region of MASK in IMAGE")
    p.add_argument("image")
    p.add_argument("mask")
    p.add_argument("prompt")
    _common(p, default_out="outputs/inpaint", strength=INPAINT_STRENGTH, mask=True)
    p.set_defaults(run=run)


def _common(p: argparse.ArgumentParser, *, default_out: str, strength: float | None = None,
            hires: bool = False, mask: bool = False) -> None:
    add_sampling_arguments(p, strength=strength, image=True, hires=hires, mask=mask)
    p.add_argument("--model", default=None, help="our .safetensors, an SD 1.x file or a diffusers folder "
                                                 "(default: the built-in shapes model)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add_dtype_argument(p)
    p.add_argument("--embeddings", default=None, metavar="PATH",
                   help="textual-inversion embeddings (.pt, .safetensors, .bin): a folder, where each file's stem is "
                        "a prompt token (A1111's convention), or one file (its token: the name stored in it)")
    p.add_argument("--hypernetwork", action="append", default=[], metavar="PATH",
                   help="an A1111 hypernetwork (.pt or .safetensors) applied to every image (repeat to chain)")
    p.add_argument("--hypernetwork-strength", type=float, default=1.0,
                   help="strength of every --hypernetwork (default: %(default)s)")
    p.add_argument("--hypernetwork-dir", default=None, metavar="DIR",
                   help="where <hypernet:name:strength> prompt tags find NAME.pt / NAME.safetensors")
    p.add_argument("--lora-dir", default=None, metavar="DIR",
                   help="where <lora:name:w> and <lora:name:te_w:unet_w> prompt tags find NAME.safetensors (kohya / "
                        "A1111 or diffusers LoRAs)")
    p.add_argument("--n-iter", type=int, default=1, metavar="N",
                   help="batch count: N batches one after another, the seeds continuing (A1111's Batch count; "
                        "default: %(default)s)")
    p.add_argument("--grid", action="store_true",
                   help="also save all the images as one grid PNG (grid-NNNN.png, with the first one's infotext)")
    p.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_folder(out)  # a file in the way fails now, not after the images are made
    source = getattr(args, "from_png", None) or getattr(args, "infotext", None)
    if source is not None:
        text = infotext_of(source)
        read_infotext(text)  # a file without parameters, or a bad value, fails before the model loads
        overrides = {name: getattr(args, name) for name in getattr(args, _GIVEN) if name in _FIELDS}
        overrides.update({} if args.prompt is None else {"prompt": args.prompt})
    elif args.prompt is None:
        raise ValueError("a prompt is required (or --from-png FILE / --infotext TEXT to take the infotext's)")
    else:
        opts = generate_options(args, prompt=args.prompt)
    if args.n_iter < 1 or (source is not None and args.n_iter > 1):
        raise ValueError(f"--n-iter must be at least 1, got {args.n_iter}" if args.n_iter < 1 else
                         "--n-iter regenerates one batch only with --from-png / --infotext: leave it out")
    image = load_image(args.image) if "image" in args else None
    mask = load_image(args.mask) if "mask" in args else None
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.embeddings:
        print("embeddings:", ", ".join(load_embeddings(pipe.model, args.embeddings)), file=sys.stderr)
    pipe.hypernetworks.folder = args.hypernetwork_dir
    pipe.loras.folder = args.lora_dir
    for path in args.hypernetwork:
        pipe.load_hypernetwork(path, args.hypernetwork_strength)
    if source is None:
        images = pipe.generate_batches(opts, args.n_iter, image, mask)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InfotextWarning)
            images = pipe.txt2img_from_infotext(text, **overrides)
        for warning in caught:
            print(f"nanoldm {args.command}: warning: {warning.message}", file=sys.stderr)
    save_images(images, out)
    if args.grid:
        print(outputs.save_grid(images, out))
    return 0


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32",
                   help="the networks' precision: float32 (default), bfloat16 (bf16; faster on CPUs with AMX) or "
                        "float16 (fp16; for GPUs)")


def save_images(images: list, out: Path) -> None:
    """Write each image as a new numbered PNG in ``out`` (``pipelines/outputs.py``) and print its path."""
    for path in outputs.save_images(images, out):
        print(path)


# --- which flags were given (an infotext's settings are overridden only by those) ------------------------------

_GIVEN = "given_fields"
_FIELDS = {f.name for f in dataclasses.fields(GenerateOptions)}
_RECORDING: dict[type, type] = {}


def _record_given(p: argparse.ArgumentParser) -> None:
    """Make every option of ``p`` add its destination to ``args.given_fields`` when it appears on the command line
    (each action's class is swapped for a subclass that records, then acts as before)."""
    p.set_defaults(**{_GIVEN: frozenset()})
    for action in p._actions:  # argparse keeps no public list of a parser's actions
        if action.option_strings:
            action.__class__ = _recording(type(action))


def _recording(cls: type) -> type:
    if cls not in _RECORDING:
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, _GIVEN, getattr(namespace, _GIVEN, frozenset()) | {self.dest})
            cls.__call__(self, parser, namespace, values, option_string)
        _RECORDING[cls] = type(f"Recording{cls.__name__}", (cls,), {"__call__": __call__})
    return _RECORDING[cls]

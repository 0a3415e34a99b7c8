"""``nanoldm txt2img | img2img | inpaint``: generate PNGs (with A1111 infotext) into ``--out``.

Imports are at the top: ``import nanoldm`` already loads the pipeline (and torch), so importing them lazily
would not make ``nanoldm --help`` faster."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.finetune.textual_inversion import load_embeddings
from nanoldm.options import IMG2IMG_STRENGTH, INPAINT_STRENGTH
from nanoldm.pipelines.images import load_image
from nanoldm.pipelines.infotext import save_png
from nanoldm.pipelines.pipeline import load_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("txt2img", help="generate images from a prompt")
    p.add_argument("prompt")
    _common(p, default_out="outputs/txt2img")
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
    _common(p, default_out="outputs/inpaint", strength=INPAINT_STRENGTH)
    p.set_defaults(run=run)


def _common(p: argparse.ArgumentParser, *, default_out: str, strength: float | None = None) -> None:
    add_sampling_arguments(p, strength=strength, image=True)
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
    p.add_argument("--out", default=default_out, help="output folder (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    opts = generate_options(args, prompt=args.prompt)
    image = load_image(args.image) if "image" in args else None
    mask = load_image(args.mask) if "mask" in args else None
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.embeddings:
        print("embeddings:", ", ".join(load_embeddings(pipe.model, args.embeddings)), file=sys.stderr)
    pipe.hypernetworks.folder = args.hypernetwork_dir
    pipe.loras.folder = args.lora_dir
    for path in args.hypernetwork:
        pipe.load_hypernetwork(path, args.hypernetwork_strength)
    save_images(pipe.generate(opts, image, mask), Path(args.out))
    return 0


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32",
                   help="the networks' precision: float32 (default), bfloat16 (bf16; faster on CPUs with AMX) or "
                        "float16 (fp16; for GPUs)")


def save_images(images: list, out: Path) -> None:
    """Write each image (PIL, with ``info["seed"]`` and ``info["parameters"]``) as a new PNG in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for image in images:
        path = _next_free(out, image.info["seed"])
        save_png(image, path, image.info["parameters"])
        print(path)


def _next_free(folder: Path, seed: int) -> Path:
    """``00007-<seed>.png``: numbered after the files already there, never overwriting one."""
    taken = [int(p.name[:5]) for p in folder.glob("*.png") if p.name[:5].isdigit()]
    index = max(taken, default=-1) + 1
    while (path := folder / f"{index:05d}-{seed}.png").exists():
        index += 1
    return path

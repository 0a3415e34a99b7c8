"""``nanoldm txt2img | img2img | inpaint``: generate PNGs (with A1111 infotext) into ``--out``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("txt2img", help="generate images from a prompt")
    p.add_argument("prompt")
    _common(p, default_out="outputs/txt2img")
    p.set_defaults(run=run, mode="txt2img")

    p = sub.add_parser("img2img", help="regenerate an image guided by a prompt")
    p.add_argument("image")
    p.add_argument("prompt")
    p.add_argument("--strength", type=float, default=0.75, help="how much of the schedule is re-run, in [0, 1]")
    _common(p, default_out="outputs/img2img")
    p.set_defaults(run=run, mode="img2img")

    p = sub.add_parser("inpaint", help="regenerate the white region of MASK in IMAGE")
    p.add_argument("image")
    p.add_argument("mask")
    p.add_argument("prompt")
    p.add_argument("--strength", type=float, default=1.0, help="how much of the schedule is re-run, in [0, 1]")
    _common(p, default_out="outputs/inpaint")
    p.set_defaults(run=run, mode="inpaint")


def _common(p: argparse.ArgumentParser, *, default_out: str) -> None:
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--model", default=None, help="our .safetensors, an SD 1.x file or a diffusers folder")
    p.add_argument("--sampler", default="Euler a", help='e.g. "Euler a", "DPM++ 2M Karras", ddim, euler')
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=-1, help="-1: random")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add_dtype_argument(p)
    p.add_argument("--embeddings", default=None, metavar="PATH",
                   help="textual-inversion embeddings (.pt, .safetensors, .bin): a folder, where each file's stem is "
                        "a prompt token (A1111's convention), or one file (its token: the name stored in it)")
    p.add_argument("--hypernetwork", action="append", default=[], metavar="PATH",
                   help="an A1111 hypernetwork (.pt or .safetensors) applied to every image (repeat to chain)")
    p.add_argument("--hypernetwork-strength", type=float, default=1.0, help="strength of every --hypernetwork")
    p.add_argument("--hypernetwork-dir", default=None, metavar="DIR",
                   help="where <hypernet:name:strength> prompt tags find NAME.pt / NAME.safetensors")
    p.add_argument("--out", default=default_out, help="output folder")


def run(args: argparse.Namespace) -> int:
    from nanoldm.pipelines.images import load_image
    from nanoldm.pipelines.pipeline import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.embeddings:
        from nanoldm.finetune.textual_inversion import load_embeddings

        print("embeddings:", ", ".join(load_embeddings(pipe.model, args.embeddings)), file=sys.stderr)
    pipe.hypernetworks.folder = args.hypernetwork_dir
    for path in args.hypernetwork:
        pipe.load_hypernetwork(path, args.hypernetwork_strength)
    options = dict(negative_prompt=args.negative_prompt, sampler=args.sampler, steps=args.steps,
                   cfg_scale=args.cfg_scale, seed=args.seed, width=args.width, height=args.height,
                   batch_size=args.batch_size, clip_skip=args.clip_skip, eta=args.eta)
    if args.mode == "txt2img":
        images = pipe.txt2img(args.prompt, **options)
    elif args.mode == "img2img":
        images = pipe.img2img(load_image(args.image), args.prompt, strength=args.strength, **options)
    else:
        mask = load_image(args.mask)
        images = pipe.inpaint(load_image(args.image), mask, args.prompt, strength=args.strength, **options)
    save_images(images, Path(args.out))
    return 0


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32",
                   help="the networks' precision: float32 (default), bfloat16 (bf16; faster on CPUs with AMX) or "
                        "float16 (fp16; for GPUs)")


def save_images(images: list, out: Path) -> None:
    """Write each image (PIL, with ``info["seed"]`` and ``info["parameters"]``) as a new PNG in ``out``."""
    from nanoldm.pipelines.infotext import save_png

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

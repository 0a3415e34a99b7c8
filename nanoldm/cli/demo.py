"""``nanoldm demo``: the built-in default, end to end.

The built-in shapes-world model (or ``--model``) draws a handful of prompts, four seeds each, through the whole
Stable Diffusion pipeline: CLIP text encoder -> UNet under classifier-free guidance from Gaussian latent noise ->
VAE decoder. The images are saved as one grid PNG carrying A1111 infotext, and the judge (which reads shapes back
without any learned model) scores every image against its prompt.

Imports are at the top: ``import nanoldm`` already loads the pipeline (and torch), so importing them lazily
would not make ``nanoldm --help`` faster.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from nanoldm.builtin import provenance
from nanoldm.checkpoint.formats import check_folder
from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.evaluation.shapes_judge import score
from nanoldm.pipelines.infotext import save_png
from nanoldm.pipelines.pipeline import load_pipeline
from nanoldm.rng import resolve_seed

PROMPTS = (
    "a large red circle at the top left",
    "a small blue square at the center",
    "a large yellow triangle at the bottom right",
    "a small orange circle at the right",
    "a red square left of a blue circle",
    "a yellow triangle above a purple square",
    "a large green triangle at the top",  # green triangles were held out of the built-in model's training
    "a purple circle below an orange square",  # and so were purple circles
)
SEEDS_PER_PROMPT = 4
ZOOM = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the built-in model: generate for a few prompts, judge every image")
    p.add_argument("--model", default=None, help="default: the built-in shapes-world model")
    p.add_argument("--out", default="outputs/demo", help="folder for demo.png (default: %(default)s)")
    # a fixed seed: the demo shows the same grid every time (prompt i, image j uses seed + 4 * i + j)
    add_sampling_arguments(p, seed=0, batch_size=None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    opts = generate_options(args, batch_size=SEEDS_PER_PROMPT)
    opts = dataclasses.replace(opts, seed=resolve_seed(opts.seed))  # -1: one random seed for the whole grid
    pipe = load_pipeline(args.model)
    if opts.cfg_scale is None:
        opts = dataclasses.replace(opts, cfg_scale=pipe.model.config.default_cfg_scale)
    counts = pipe.model.num_parameters()
    print(f"model: {pipe.model_path} ({', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items())} parameters)")
    record = provenance() if args.model is None else {}
    if record:
        print(f"   trained from nothing by: {record['command']} ({record['minutes']:.0f} min on {record['machine']})")
    size = pipe.model.config.image_size
    grid = Image.new("RGB", (size * SEEDS_PER_PROMPT, size * len(PROMPTS)), "white")
    right_total, first, rows = 0, None, []
    out = Path(args.out)
    check_folder(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    print(f"{SEEDS_PER_PROMPT} images per prompt ({opts.sampler}, {opts.steps} steps, CFG {opts.cfg_scale}); "
          f"the judge's verdict per image:")
    for i, prompt in enumerate(PROMPTS):
        images = pipe.generate(dataclasses.replace(opts, prompt=prompt, seed=opts.seed + SEEDS_PER_PROMPT * i),
                               progress=False)
        first = first or images[0]
        verdicts = [score(im, prompt)["all_correct"] for im in images]
        right_total += sum(verdicts)
        for j, im in enumerate(images):
            grid.paste(im, (j * size, i * size))
            save_png(im, out / "images" / f"{i}-{j}.png", im.info["parameters"])  # each with its own infotext
        rows.append(f"{''.join('+' if v else '-' for v in verdicts)}  {prompt}")
        print(f"   {rows[-1]}")
    big = grid.resize((grid.width * ZOOM, grid.height * ZOOM), Image.Resampling.NEAREST)
    # A1111 stores the first image's infotext on grids; each image's own is beside it, in images/ROW-COLUMN.png
    save_png(labelled(big, rows), out / "demo.png", first.info["parameters"])
    n = len(PROMPTS) * SEEDS_PER_PROMPT
    print(f"judge: {right_total}/{n} images right on every attribute ({right_total / n:.0%}); "
          f"grid (one row per prompt, labelled) in {out / 'demo.png'}, each image in {out / 'images'}")
    command = "nanoldm" if shutil.which("nanoldm") else "source .venv/bin/activate; nanoldm"
    print(f'next: {command} txt2img "a small green square at the bottom left" --seed 1   (or nanoldm eval)')
    return 0


def labelled(grid: Image.Image, labels: list[str], width: int = 300) -> Image.Image:
    """``grid`` with a white column on its left holding one label per row, vertically centred on the row."""
    out = Image.new("RGB", (width + grid.width, grid.height), "white")
    out.paste(grid, (width, 0))
    draw, row, font = ImageDraw.Draw(out), grid.height / len(labels), ImageFont.load_default(size=15)
    for i, text in enumerate(labels):
        draw.text((8, (i + 0.5) * row), text, fill="black", anchor="lm", font=font)
    return out

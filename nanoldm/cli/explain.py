"""``nanoldm explain PROMPT --out DIR``: generate one image and write what happened inside the run.

DIR gets ``image.png`` (with its A1111 infotext), ``trajectory.png`` (the x0 prediction after each step, left to
right), ``words/NN-WORD.png`` (each prompt word's cross-attention map over the image, labelled with the word and
its share of the attention) and ``index.json`` (the settings, the files, each word's share and context columns).
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from nanoldm.cli.generate import add_dtype_argument
from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.finetune.textual_inversion import load_embeddings
from nanoldm.pipelines.explain import explain
from nanoldm.pipelines.explain_pictures import strip_picture, word_picture
from nanoldm.pipelines.infotext import save_png
from nanoldm.pipelines.pipeline import load_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="see inside one generation: the denoising trajectory and, for each prompt "
                                       "word, where the image looked at it (cross-attention maps)")
    p.add_argument("prompt")
    p.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the pictures")
    add_sampling_arguments(p, batch_size=None, image=True)
    p.add_argument("--model", default=None, help="our .safetensors, an SD 1.x file or a diffusers folder "
                                                 "(default: the built-in shapes model)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    add_dtype_argument(p)
    p.add_argument("--embeddings", default=None, metavar="PATH", help="textual-inversion embeddings (file or folder)")
    p.add_argument("--hypernetwork-dir", default=None, metavar="DIR",
                   help="where <hypernet:name:strength> prompt tags find their files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not an empty folder: choose a new one")
    if not args.prompt.strip():
        raise ValueError("the prompt is empty: there are no words to see attention for")
    opts = generate_options(args, prompt=args.prompt)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.embeddings:
        load_embeddings(pipe.model, args.embeddings)
    pipe.hypernetworks.folder = args.hypernetwork_dir
    explanation = explain(pipe, opts, progress=True)[0]
    (out / "words").mkdir(parents=True, exist_ok=True)
    save_png(explanation.image, out / "image.png", explanation.image.info["parameters"])
    strip_picture(explanation).save(out / "trajectory.png")
    words = []
    for n, word in enumerate(explanation.words):
        name = f"words/{n:02d}-{_file_name(word.word)}.png"
        word_picture(explanation.image, word).save(out / name)
        words.append({"word": word.word, "share": round(word.share, 6), "columns": word.columns, "file": name})
    index = {"prompt": opts.prompt, "parameters": explanation.image.info["parameters"],
             "seed": explanation.image.info["seed"], "image": "image.png", "trajectory": "trajectory.png",
             "steps": len(explanation.trajectory), "words": words}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    print(out / "index.json")
    return 0


def _file_name(word: str) -> str:
    """A word as a safe file-name part: letters and digits kept, every other run of characters -> "_"."""
    return re.sub(r"[^a-z0-9]+", "_", word.lower()).strip("_") or "symbol"

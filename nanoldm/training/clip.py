"""``nanoldm train clip``: a small CLIP (:mod:`nanoldm.text.clip_model`) from scratch on image-caption pairs.

Loss per step: the symmetric contrastive loss of Radford et al. 2021 (fig. 3) over the batch: each image
against every caption of the batch and each caption against every image, the matching pair the target.

Data: an image folder with captions (``--data DIR``; only its captioned images train, the others are named
in a warning) or the shapes world in memory (``--data shapes --count N``), images in [-1, 1]. Captions are
tokenized once, up front. For the shapes world, ``HELD_OUT`` further images past ``--count`` never train;
at the end the CLIP captions them (:mod:`nanoldm.evaluation.captioner`) and the accuracy is printed and logged.

Output: ``OUT/clip.safetensors`` (:func:`~nanoldm.text.clip_model.save_clip`), the EMA weights if EMA is on.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from nanoldm.checkpoint.parts import save_clip
from nanoldm.text.clip_model import CLIP, CLIPConfig
from nanoldm.text.tokenizer import CLIPTokenizer
from nanoldm.training.loop import LOG, TrainConfig, train

CLIP_FILE = "clip.safetensors"
HELD_OUT = 256


# --- data ------------------------------------------------------------------------------------

def shapes_pairs(count: int, *, size: int = 32, seed: int = 0, start: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Shapes-world images ``start .. start + count - 1`` in [-1, 1] and their captions.
    Shapes: -> (count, 3, size, size), count captions."""
    from nanoldm.data.shapes import ShapesWorld

    world = ShapesWorld(size=size, seed=seed, count=start + count)
    samples = [world.sample(i) for i in range(start, start + count)]
    pixels = np.stack([s.image for s in samples])  # (N, S, S, 3)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0, [s.caption for s in samples]


def folder_pairs(path: str, *, size: int) -> tuple[torch.Tensor, list[str]]:
    """The captioned images of a folder in [-1, 1] and their captions; ValueError if none has a caption."""
    from nanoldm.data.folder import ImageFolder

    folder = ImageFolder(path, size=size)
    keep = [i for i, c in enumerate(folder.captions) if c is not None]
    if not keep:
        raise ValueError(f"{path}: none of its {len(folder)} images has a caption; CLIP trains on image-caption "
                         f"pairs (a same-name .txt beside each image, or a metadata.jsonl)")
    if len(keep) < len(folder):
        warnings.warn(f"{path}: {len(folder) - len(keep)} of {len(folder)} images have no caption and are not "
                      f"used (caption them with 'nanoldm caption' once this CLIP is trained)", stacklevel=2)
    return torch.stack([folder[i]["image"] for i in keep]), [folder.captions[i] for i in keep]


# --- the task ---------------------------------------------------------------------------------

class CLIPTask:
    """The loop's :class:`~nanoldm.training.loop.Task` for a CLIP. Shapes: images (N, 3, H, W), N captions."""

    def __init__(self, model: CLIP, images: torch.Tensor, captions: list[str], tokenizer: CLIPTokenizer):
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        limit = model.cfg.text.max_positions
        self.model, self.images, self.eos_id = model, images, tokenizer.eos_id
        self.tokens = tokenizer(captions, max_length=limit)  # (N, limit)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"clip": self.model}

    def num_examples(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[indices], self.tokens[indices]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        images, tokens = batch
        return self.model.loss(images, tokens, self.eos_id)


# --- the command ------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    from nanoldm.cli.train import add_data_arguments, add_loop_arguments

    p = sub.add_parser("clip", help="a small CLIP (image and text towers, contrastive loss)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(p, count=5000)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--image-channels", default="32,64,128", help="one strided conv block per entry")
    add_loop_arguments(p, steps=2000, batch_size=64, lr=1e-3)
    p.set_defaults(run=run)


def clip_config(args: argparse.Namespace) -> CLIPConfig:
    """The default CLIPConfig (SHAPES_TINY's text tower) with the command line's changes."""
    return CLIPConfig(embed_dim=args.embed_dim, image_size=args.size,
                      image_channels=tuple(int(c) for c in args.image_channels.split(",")))


def run(args: argparse.Namespace) -> int:
    from nanoldm.cli.train import loop_config

    cfg, model_cfg = loop_config(args), clip_config(args)
    if args.data == "shapes":
        images, captions = shapes_pairs(args.count, size=args.size, seed=args.seed)
    else:
        images, captions = folder_pairs(args.data, size=args.size)
    torch.manual_seed(cfg.seed)
    task = CLIPTask(CLIP(model_cfg), images, captions, CLIPTokenizer.default())
    train(task, cfg, resume=args.resume)
    model = finish(task, cfg)
    if args.data == "shapes":
        report_accuracy(model, cfg, size=args.size, start=args.count)
    print(f"wrote {Path(cfg.out_dir) / CLIP_FILE}")
    return 0


def finish(task: CLIPTask, cfg: TrainConfig) -> CLIP:
    """The EMA weights if any, in eval mode; writes OUT/clip.safetensors."""
    model, out = task.model, Path(cfg.out_dir)
    if cfg.ema_decay is not None:
        from nanoldm.training.state import load_ema_weights

        load_ema_weights(model, "clip", out / "checkpoint.safetensors")
    model.eval()
    save_clip(out / CLIP_FILE, model)
    return model


def report_accuracy(model: CLIP, cfg: TrainConfig, *, size: int, start: int) -> dict:
    """Caption ``HELD_OUT`` unseen shapes images; print and log the exact-caption accuracy."""
    from nanoldm.evaluation.captioner import Captioner, caption_accuracy

    images, truth = shapes_pairs(HELD_OUT, size=size, seed=cfg.seed, start=start)
    result = caption_accuracy(Captioner(model), images, truth)
    print(f"held-out captions exactly right: {result['exact']:.1%} of {len(truth)} "
          f"(single object {result['single']:.1%}, two objects {result['pair']:.1%})")
    with open(Path(cfg.out_dir) / LOG, "a") as log:
        log.write(json.dumps({"caption_accuracy": result}) + "\n")
    return result


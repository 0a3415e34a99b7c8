"""``nanoldm train clip``: a small CLIP (:mod:`nanoldm.text.clip_model`) from scratch on image-caption pairs.

Loss per step: the symmetric contrastive loss of Radford et al. 2021 (fig. 3) over the batch: each image
against every caption of the batch and each caption against every image, the matching pair the target.

Data: an image folder with captions (only its captioned images train, the others are named in a warning) or
the shapes world in memory (:class:`~nanoldm.data.sources.ImageSource`), images in [-1, 1]. Captions are
tokenized once, up front. For the shapes world, ``HELD_OUT`` further images past ``count`` never train;
at the end the CLIP captions them (:mod:`nanoldm.evaluation.captioner`) and the accuracy is printed and logged.

Output: ``OUT/clip.safetensors`` (:func:`~nanoldm.checkpoint.parts.save_clip`), the EMA weights if EMA is on.
From Python: ``train_clip(ImageSource("shapes", count=5000, size=32), TrainConfig(...), CLIPOptions())``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from nanoldm.checkpoint.parts import save_clip
from nanoldm.data.sources import Captions, ImageSource, shapes_images
from nanoldm.evaluation.captioner import Captioner, caption_accuracy
from nanoldm.text.clip_model import CLIP, CLIPConfig
from nanoldm.text.tokenizer import CLIPTokenizer
from nanoldm.training.loop import LOG, TrainConfig, train
from nanoldm.training.state import load_ema_weights

CLIP_FILE = "clip.safetensors"
HELD_OUT = 256


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


@dataclass(frozen=True)
class CLIPOptions:
    """The CLIP's own sizes (its text tower is SHAPES_TINY's): the shared embedding width and one strided conv
    block per image-tower entry."""
    embed_dim: int = 128
    image_channels: tuple[int, ...] = (32, 64, 128)


def train_clip(data: ImageSource, loop: TrainConfig, options: CLIPOptions = CLIPOptions(), *,
               resume: bool = False) -> Path:
    """Train a CLIP from scratch on ``data``'s captioned images (size: ``data.size``, default 32); the shapes
    world is drawn from ``loop.seed``. Writes OUT/clip.safetensors and returns its path."""
    size = data.size or 32
    model_cfg = CLIPConfig(embed_dim=options.embed_dim, image_size=size, image_channels=options.image_channels)
    images = data.load(size, seed=loop.seed, captions=Captions.ONLY_CAPTIONED)
    torch.manual_seed(loop.seed)
    task = CLIPTask(CLIP(model_cfg), images.unit(), images.captions, CLIPTokenizer.default())
    train(task, loop, resume=resume)
    model = finish(task, loop)
    if data.is_shapes:
        report_accuracy(model, loop, size=size, start=data.count)
    print(f"wrote {Path(loop.out_dir) / CLIP_FILE}")
    return Path(loop.out_dir) / CLIP_FILE


def finish(task: CLIPTask, cfg: TrainConfig) -> CLIP:
    """The EMA weights if any, in eval mode; writes OUT/clip.safetensors."""
    model, out = task.model, Path(cfg.out_dir)
    if cfg.ema_decay is not None:
        load_ema_weights(model, "clip", out / "checkpoint.safetensors")
    model.eval()
    save_clip(out / CLIP_FILE, model)
    return model


def report_accuracy(model: CLIP, cfg: TrainConfig, *, size: int, start: int) -> dict:
    """Caption ``HELD_OUT`` unseen shapes images; print and log the exact-caption accuracy."""
    held = shapes_images(HELD_OUT, size, seed=cfg.seed, start=start)
    images, truth = held.unit(), held.captions
    result = caption_accuracy(Captioner(model), images, truth)
    print(f"held-out captions exactly right: {result['exact']:.1%} of {len(truth)} "
          f"(single object {result['single']:.1%}, two objects {result['pair']:.1%})")
    with open(Path(cfg.out_dir) / LOG, "a") as log:
        log.write(json.dumps({"caption_accuracy": result}) + "\n")
    return result


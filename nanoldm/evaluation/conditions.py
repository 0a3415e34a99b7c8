"""Judging the models of the other conditions (``nanoldm train ldm --condition class|layout|mask``).

- class: every base class (colour x shape) is drawn ``per_class`` times; right when the judge reads exactly one
  object of that colour and shape;
- layout: layouts of the eval world (one or two objects) are drawn; each layout object is matched to the reading
  of its colour and shape whose box overlaps it most, and counts as placed when that box's IoU with the
  layout's box is at least 0.5; every object the image has beyond its layout counts as one more failure;
- mask (an inpainting model): in images of the eval world one object's mask is repainted from the caption; the
  PSNR of the pixels the mask leaves alone (outside the latent cells it touches) against the original, measured
  on what the model decodes (no pasting back of the original, ``overlay=False``), and whether the judge finds
  the whole caption right in the result.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.vocabulary import BASE_SHAPES, COLOURS, class_name
from nanoldm.evaluation.prompt_following import EVAL_SEED
from nanoldm.evaluation.shapes_judge import judge, score
from nanoldm.options import INPAINT_STRENGTH, GenerateOptions, as_options
from nanoldm.pipelines.conditioned import condition_contexts
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import sample_contexts

IOU_OK = 0.5


def box_iou(a, b) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def evaluate_class(pipe: Pipeline, condition, *, per_class: int = 4, seed: int = 0,
                   options: GenerateOptions | None = None, **sampling) -> dict:
    """Share of images the judge reads as exactly one object of the asked class (``options`` or
    :class:`GenerateOptions` fields ``sampling``: sampler, steps, cfg_scale, ...)."""
    parts, opts = pipe.parts(), as_options(options, **sampling)
    right = n = 0
    for k, (shape, colour) in enumerate(itertools.product(BASE_SHAPES, COLOURS)):
        context, uncond = condition_contexts(condition, f"{colour} {shape}", per_class)
        seeds = [seed + k * per_class + i for i in range(per_class)]
        for image in tensor_to_pil(sample_contexts(parts, opts, context, uncond, seeds)):
            readings = judge(image)
            right += len(readings) == 1 and (readings[0].colour, readings[0].shape) == (colour, shape)
            n += 1
    return {"class": right / n, "n": n}


def evaluate_layout(pipe: Pipeline, condition, *, count: int = 64, seed: int = 0,
                    options: GenerateOptions | None = None, **sampling) -> dict:
    """How well a layout model puts each object in its box, and nothing else.

    Each layout object takes the reading of its colour and shape that overlaps its box most (a reading serves one
    object); it is placed when that IoU is at least 0.5. Readings no layout object took are extra objects, and
    each counts as a failure: ``placed`` = placed objects / (layout objects + extra objects). Also: the mean IoU,
    the extra objects per image, and ``exact``, the share of images with every object placed and none extra."""
    parts, opts = pipe.parts(), as_options(options, **sampling)
    ious, extras, exact = [], [], []
    for i, sample in enumerate(ShapesWorld(seed=EVAL_SEED, count=count)):
        classes = torch.tensor([[cid for cid, _ in sample.layout]])
        boxes = torch.tensor([[list(box) for _, box in sample.layout]], dtype=torch.float32)
        with torch.no_grad():
            context, uncond = condition(classes, boxes), condition.null(1)
        image = tensor_to_pil(sample_contexts(parts, opts, context, uncond, [seed + i]))[0]
        found = match_layout(sample.layout, judge(image))
        ious += found.ious
        extras.append(found.extra)
        exact.append(found.extra == 0 and min(found.ious) >= IOU_OK)
    placed = sum(iou >= IOU_OK for iou in ious)
    return {"placed": placed / (len(ious) + sum(extras)), "mean_iou": float(np.mean(ious)),
            "extra_per_image": float(np.mean(extras)), "exact": float(np.mean(exact)), "n": len(ious)}


@dataclasses.dataclass(frozen=True)
class LayoutMatch:
    """Per layout object the IoU of the reading it took (0 if none), and how many readings were left over."""
    ious: list[float]
    extra: int


def match_layout(layout, readings) -> LayoutMatch:
    """Give each layout object ``(class id, box)`` the reading of its colour and shape overlapping its box most,
    greedily by IoU over all pairs, each reading at most once (a misplaced object takes its reading too, so it
    fails once, as misplaced); the readings left are extra objects."""
    pairs = []
    for k, (cid, box) in enumerate(layout):
        colour, shape = class_name(cid)
        pairs += [(box_iou(r.box, box), k, j) for j, r in enumerate(readings) if (r.colour, r.shape) == (colour, shape)]
    ious, done, taken = [0.0] * len(layout), set(), set()
    for iou, k, j in sorted(pairs, reverse=True):
        if k not in done and j not in taken:
            ious[k] = iou
            done.add(k)
            taken.add(j)
    return LayoutMatch(ious, len(readings) - len(taken))


def evaluate_inpaint(pipe: Pipeline, *, count: int = 32, seed: int = 0, options: GenerateOptions | None = None,
                     **sampling) -> dict:
    """Repaint the second object of two-object eval images: PSNR outside the mask, and the judge's verdict
    (``options`` or :class:`GenerateOptions` fields ``sampling``; strength is inpainting's unless given there)."""
    opts = as_options(options, **{"strength": INPAINT_STRENGTH, **sampling})
    f, psnrs, right = pipe.latent_factor, [], []
    for i, sample in enumerate(ShapesWorld(seed=EVAL_SEED, count=count, objects=(2,))):
        mask = torch.from_numpy(sample.masks[1]).float()[None, None]  # (1, 1, H, W)
        mask = F.max_pool2d(mask, 3, stride=1, padding=1)  # one pixel of margin for the antialiased edge
        H, W = mask.shape[-2:]
        touched = F.interpolate(F.interpolate(mask, size=(H // f, W // f)), size=(H, W))  # latent cells repainted
        keep = (touched[0, 0] < 0.5).numpy() & (mask[0, 0] < 0.5).numpy()
        mask_image = Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8))
        out = pipe.generate(dataclasses.replace(opts, prompt=sample.caption, seed=seed + i), sample.pil(),
                            mask_image, overlay=False, progress=False)[0]
        diff = np.asarray(out, dtype=np.float64)[keep] - sample.image[keep].astype(np.float64)
        psnrs.append(10 * np.log10(255.0 ** 2 / max(float((diff ** 2).mean()), 1e-10)) if keep.any() else np.nan)
        right.append(score(out, sample.caption)["all_correct"])
    return {"psnr_outside": float(np.nanmean(psnrs)), "all": float(np.mean(right)), "n": count}

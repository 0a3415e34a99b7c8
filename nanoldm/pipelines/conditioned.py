"""Sampling from class- and layout-conditioned models (``nanoldm train ldm --condition class|layout``).

Such a model is its UNet and VAE (``OUT/model.safetensors``) plus the condition module that replaced the text
encoder (``OUT/condition.safetensors``: a :class:`ClassEmbedding` or a :class:`LayoutEncoder`). The module turns
a class label, or a layout (class and box per object), into the context, and its null token(s) into the
unconditional context of classifier-free guidance; the rest is txt2img
(:func:`~nanoldm.pipelines.sampling.sample_contexts`).

Conditions are written as text on the command line:

- a class: ``"red circle"`` (colour and shape from the shapes vocabulary);
- a layout: ``"red circle 0.1 0.1 0.4 0.4; blue square 0.55 0.5 0.9 0.85"``, per object its class and box
  x0 y0 x1 y1 in [0, 1] of the image (y down), objects separated by ``;``.
"""
from __future__ import annotations

import dataclasses

import torch
from PIL import Image

from nanoldm.conditioning import ClassEmbedding, LayoutEncoder
from nanoldm.data.vocabulary import class_id
from nanoldm.options import GenerateOptions, as_options
from nanoldm.pipelines.conventions import PIXEL_ROUNDING, infotext_names
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.infotext import format_infotext, generation_params
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import sample_contexts
from nanoldm.rng import resolve_seed

# Where class / layout sampling differs from GenerateOptions' defaults, on purpose: a fixed seed (0, not random)
# because a condition is a test of the model, to be reproduced. ``nanoldm sample`` uses the same. The guidance
# scale is the model's own, as everywhere (``ModelConfig.default_cfg_scale``).
CONDITION_DEFAULTS = {"seed": 0}


def parse_class(text: str) -> int:
    """``"red circle"`` -> its class id; ValueError naming the problem otherwise."""
    words = text.lower().split()
    if len(words) != 2:
        raise ValueError(f"a class is 'colour shape', e.g. 'red circle'; got {text!r}")
    try:
        return class_id(*words)
    except ValueError:
        raise ValueError(f"unknown class {text!r}: expected a shapes-world colour and shape") from None


def parse_layout(text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``"red circle 0.1 0.1 0.4 0.4; ..."`` -> classes (M,) int64 and boxes (M, 4) (see the module docstring)."""
    classes, boxes = [], []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        words = item.split()
        if len(words) != 6:
            raise ValueError(f"a layout object is 'colour shape x0 y0 x1 y1'; got {item!r}")
        try:
            box = [float(v) for v in words[2:]]
        except ValueError:
            raise ValueError(f"the box of {item!r} must be four numbers") from None
        if not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
            raise ValueError(f"the box of {item!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        classes.append(parse_class(" ".join(words[:2])))
        boxes.append(box)
    if not classes:
        raise ValueError("the layout names no object")
    return torch.tensor(classes, dtype=torch.int64), torch.tensor(boxes, dtype=torch.float32)


@torch.no_grad()
def condition_contexts(condition: torch.nn.Module, text: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The context of a class or layout written as text, and the null context, each repeated for the batch.
    Shapes: -> (B, L, D), (B, L, D)."""
    if isinstance(condition, ClassEmbedding):
        context = condition(torch.tensor([parse_class(text)]))
    elif isinstance(condition, LayoutEncoder):
        classes, boxes = parse_layout(text)
        context = condition(classes[None], boxes[None])
    else:
        raise TypeError(f"not a condition module: {type(condition).__name__}")
    return context.expand(batch_size, -1, -1), condition.null(batch_size)


def sample_condition(pipe: Pipeline, condition: torch.nn.Module, text: str, options: GenerateOptions | None = None,
                     **fields) -> list[Image.Image]:
    """Images for one class or layout (image i uses seed + i), each with infotext naming the condition, with
    ``options`` or :class:`GenerateOptions` ``fields`` (seed, batch_size, sampler, steps, cfg_scale, ...; without
    ``options``, ``CONDITION_DEFAULTS`` first)."""
    opts = as_options(options, **{**({} if options is not None else CONDITION_DEFAULTS), **fields})
    parts = pipe.parts()
    opts = dataclasses.replace(opts, prompt=text, seed=resolve_seed(opts.seed),
                               cfg_scale=parts.guidance(opts.cfg_scale))
    condition = condition.to(parts.device).eval()
    context, uncond = condition_contexts(condition, text, opts.batch_size)
    seeds = [opts.seed + i for i in range(opts.batch_size)]
    images = tensor_to_pil(sample_contexts(parts, opts, context, uncond, seeds), PIXEL_ROUNDING[opts.like])
    kind = "class" if isinstance(condition, ClassEmbedding) else "layout"
    for image, s in zip(images, seeds):
        params = generation_params(steps=opts.steps, sampler=infotext_names(opts)[0], cfg_scale=opts.cfg_scale,
                                   seed=s, width=image.width, height=image.height, extra={"Condition": kind})
        image.info["parameters"], image.info["seed"] = format_infotext(text, "", params), s
    return images

"""``nanoldm train ldm --condition class|layout|mask``: the LDM trainer (:mod:`nanoldm.training.ldm`) with a
condition other than the caption. Each task is an :class:`LDMTask` that overrides one hook:

- ``class``:  ``context()`` is a :class:`ClassEmbedding` token (B, 1, D) of the image's class label;
- ``layout``: ``context()`` is a :class:`LayoutEncoder`'s tokens (B, max_objects, D), one per object;
- ``mask``:   ``unet_input()`` appends [mask, masked-image latent] (an inpainting UNet, 4 + 1 + 4 inputs);
  the caption stays the context.

For class and layout the condition module is trained jointly with the UNet (``modules()`` holds both, so
the training checkpoint, EMA and resume cover it) and the text encoder is unused. At the end the UNet goes to
``OUT/model.safetensors`` as usual and the condition module, with its EMA weights, to
``OUT/condition.safetensors`` (:mod:`nanoldm.checkpoint.parts` writes and reads it). Labels, layouts and masks
come from the shapes world (:func:`nanoldm.data.sources.shapes_conditions`; ``--data shapes``).
"""
from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

import torch
from PIL import Image

from nanoldm.checkpoint.parts import save_condition
from nanoldm.conditioning import ClassEmbedding, LayoutEncoder
from nanoldm.conditioning.mask import build_concat_table, candidate_masks
from nanoldm.data.latents import LatentCache
from nanoldm.data.sources import ImageSource, shapes_conditions
from nanoldm.data.vocabulary import NUM_CLASSES
from nanoldm.layers.conv import Conv2d
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.images import image_grid, tensor_to_pil
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.sampling import sample_contexts
from nanoldm.training.latent_setup import LatentOptions
from nanoldm.training.ldm import LDMTask, evaluating
from nanoldm.training.state import load_ema_weights

CONDITION_FILE = "condition.safetensors"
MAX_OBJECTS = 2
FOURIER_BANDS = 8


class Condition(str, enum.Enum):
    """What the UNet is conditioned on: the caption (:class:`LDMTask`), a class label, a layout, or a mask and
    the masked image (the tasks below)."""
    TEXT = "text"
    CLASS = "class"
    LAYOUT = "layout"
    MASK = "mask"


class ClassLDMTask(LDMTask):
    """An LDM conditioned on the class label alone (the null class where dropped or where there is none)."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, labels: torch.Tensor, condition: ClassEmbedding,
                 **kwargs):
        super().__init__(model, cache, **kwargs)
        device = next(model.unet.parameters()).device
        self.labels, self.condition = labels.to(device), condition.to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet, "condition": self.condition}

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return self.condition(self.labels[indices], drop)

    def sample(self, step: int) -> Image.Image:
        """One image per class id 0..3 (seed 0, CFG) in a row."""
        labels = torch.arange(4)
        with torch.no_grad():
            context, uncond = self.condition(labels), self.condition.null(len(labels))
        return draw(self, context, uncond)


class LayoutLDMTask(LDMTask):
    """An LDM conditioned on a layout: one token per object (class + box), null tokens where dropped."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, classes: torch.Tensor, boxes: torch.Tensor,
                 condition: LayoutEncoder, **kwargs):
        super().__init__(model, cache, **kwargs)
        device = next(model.unet.parameters()).device
        self.classes, self.boxes, self.condition = classes.to(device), boxes.to(device), condition.to(device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet, "condition": self.condition}

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        return self.condition(self.classes[indices], self.boxes[indices], drop)

    def sample(self, step: int) -> Image.Image:
        """One image for each of the first four training layouts (seed 0, CFG) in a row."""
        n = min(4, len(self.classes))
        with torch.no_grad():
            context, uncond = self.condition(self.classes[:n], self.boxes[:n]), self.condition.null(n)
        return draw(self, context, uncond)


class MaskLDMTask(LDMTask):
    """An inpainting LDM: each step draws one candidate mask per image (an object's mask or the whole image)
    and appends its precomputed [mask, masked-image latent] channels to z_t. The caption stays the context."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, pixels: torch.Tensor, masks: torch.Tensor,
                 present: torch.Tensor, **kwargs):
        super().__init__(model, cache, **kwargs)
        cfg = model.unet.cfg
        if cfg.in_channels != cfg.out_channels * 2 + 1:
            raise ValueError(f"an inpainting UNet needs {cfg.out_channels * 2 + 1} input channels, "
                             f"got {cfg.in_channels}: see to_inpainting")
        candidates, self.valid = candidate_masks(masks, present)  # (N, K, H, W), (N, K)
        self.table = build_concat_table(model.vae, pixels, candidates, model.config.vae.scale_factor)
        self.valid = self.valid.to(self.table.device)

    def unet_input(self, z_t: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Shapes: z_t (B, C, h, w) -> (B, 2C + 1, h, w); a uniformly drawn valid mask per image."""
        weights = self.valid[indices].float()  # (B, K)
        u = torch.rand(weights.shape, generator=generator, device=generator.device).to(weights.device)
        choice = (u * weights).argmax(dim=1)  # uniform over the valid candidates
        return torch.cat([z_t, self.table[indices, choice].to(z_t)], dim=1)

    def sample(self, step: int) -> Image.Image:
        """Repaint the first object of the first four training images (seed 0, CFG), in a row."""
        n = min(4, len(self.table))
        context = self.cache.context(torch.arange(n, device=self.cache.mean.device))
        return draw(self, context, self.cache.empty.expand_as(context), concat=self.table[:n, 0])


def draw(task: LDMTask, context: torch.Tensor, uncond: torch.Tensor, *, concat: torch.Tensor | None = None,
         sampler: str = "Euler") -> Image.Image:
    """Images for a batch of contexts (noise from seed 0 + i, CFG), in one row, with the weights now in the UNet.
    Shapes: context, uncond (B, L, D); concat (B, C_extra, h, w) or None."""
    parts = ModelParts.from_model(task.model, task.schedule)
    size = task.cache.mean.shape[-1] * parts.latent_factor  # the cached latents' image size
    opts = GenerateOptions(sampler=sampler, steps=task.sample_steps, cfg_scale=task.cfg_scale, width=size,
                           height=size)
    with evaluating(task.model.unet):
        images = sample_contexts(parts, opts, context, uncond, list(range(context.shape[0])), concat=concat)
    return image_grid(tensor_to_pil(images), columns=len(images))


def to_inpainting(model: LatentDiffusion) -> LatentDiffusion:
    """The model with a 4 + 1 + 4 input UNet. A 4-input UNet is widened as SD inpainting was made from SD:
    the new input channels start with zero weights, so the UNet's output is unchanged at first."""
    unet = model.unet
    C = unet.cfg.out_channels
    if unet.cfg.in_channels == 2 * C + 1:
        return model
    if unet.cfg.in_channels != C:
        raise ValueError(f"cannot make a {unet.cfg.in_channels}-input UNet an inpainting one")
    old = unet.conv_in
    new = Conv2d(2 * C + 1, old.out_channels, old.kernel_size, padding=old.padding).to(old.weight)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :C] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.cfg = dataclasses.replace(unet.cfg, in_channels=2 * C + 1)
    model.config = dataclasses.replace(model.config, unet=unet.cfg)
    return model


def conditioned_task(kind: Condition, model: LatentDiffusion, cache: LatentCache, pixels: torch.Tensor,
                     data: ImageSource, *, seed: int, options: LatentOptions) -> LDMTask:
    """The task of a class, layout or mask condition; its labels, layouts and masks come from the shapes world
    (``data`` must be it), drawn from ``seed`` as the images were."""
    if not data.is_shapes:
        raise ValueError(f"--condition {kind.value} needs --data shapes (labels, layouts and masks come from it)")
    conds = shapes_conditions(pixels.shape[-1], count=data.count, seed=seed, max_objects=MAX_OBJECTS)
    width = model.unet.cfg.context_dim
    with torch.random.fork_rng():  # the condition module's initial weights, from the seed (resume rebuilds them)
        torch.manual_seed(seed)
        if kind is Condition.CLASS:
            return ClassLDMTask(model, cache, conds.labels, ClassEmbedding(NUM_CLASSES, width),
                                **options.task_options())
        if kind is Condition.LAYOUT:
            encoder = LayoutEncoder(NUM_CLASSES, width, MAX_OBJECTS, FOURIER_BANDS)
            return LayoutLDMTask(model, cache, conds.classes, conds.boxes, encoder, **options.task_options())
    return MaskLDMTask(model, cache, pixels, conds.masks, conds.classes >= 0, **options.task_options())


def save_trained_condition(task: LDMTask, checkpoint: Path, out: Path) -> Path | None:
    """For class and layout tasks, write OUT/condition.safetensors: the condition module with its EMA weights
    when the checkpoint has them. Returns its path (None: the task has no condition module)."""
    if not isinstance(task, (ClassLDMTask, LayoutLDMTask)):
        return None
    load_ema_weights(task.condition, "condition", checkpoint)
    save_condition(out / CONDITION_FILE, task.condition)
    return out / CONDITION_FILE

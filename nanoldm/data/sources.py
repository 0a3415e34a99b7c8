"""Where every trainer's images come from: ``"shapes"`` (the shapes world rendered in memory) or an image folder
(:class:`~nanoldm.data.folder.ImageFolder`). One reader for all of them, so each trainer sees the same pixels
for the same ``data``, ``size``, ``count`` and ``seed``.

Pixels are uint8 (N, 3, size, size), what the latent cache hashes; :meth:`TrainingImages.unit` maps them to
[-1, 1] exactly as the folder reader and the pipelines do (``x / 127.5 - 1``). The shapes world renders 32 and
64; other sizes are rendered at the next larger one and area-averaged down (rounded to uint8).
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nanoldm.data.folder import ImageFolder
from nanoldm.data.shapes import IMAGE_SIZES, ShapeSample, ShapesWorld

SHAPES = "shapes"  # the ``data`` value that means the shapes world


class Captions(enum.Enum):
    """What a folder's images need: ANY (captions where present, None elsewhere), REQUIRED (a ValueError names
    the images without one), ONLY_CAPTIONED (the others are left out, with a warning)."""
    ANY = "any"
    REQUIRED = "required"
    ONLY_CAPTIONED = "only_captioned"


@dataclass
class TrainingImages:
    """Shapes: pixels (N, 3, size, size) uint8; N captions (None: the image has none)."""
    pixels: torch.Tensor
    captions: list[str | None]

    def __len__(self) -> int:
        return len(self.pixels)

    def unit(self) -> torch.Tensor:
        """The pixels in [-1, 1]. Shapes: -> (N, 3, size, size) float32."""
        return self.pixels.float() / 127.5 - 1.0

    def split(self, held: int) -> tuple[TrainingImages, TrainingImages]:
        """(all but the last ``held`` images, the last ``held``)."""
        return (TrainingImages(self.pixels[:-held], self.captions[:-held]),
                TrainingImages(self.pixels[-held:], self.captions[-held:]))


def native_size(size: int) -> int:
    """The rendered size that ``size`` is area-averaged from: the smallest the world renders at or above it."""
    native = next((s for s in IMAGE_SIZES if s >= size), None)
    if native is None:
        raise ValueError(f"the shapes world renders {IMAGE_SIZES}; cannot make {size}x{size} images from them")
    return native


def shapes_samples(count: int, size: int, *, seed: int, start: int = 0) -> list[ShapeSample]:
    """Shapes-world samples ``start .. start + count - 1`` rendered at ``native_size(size)``."""
    world = ShapesWorld(size=native_size(size), seed=seed, count=start + count)
    return [world.sample(i) for i in range(start, start + count)]


def shapes_images(count: int, size: int, *, seed: int, start: int = 0) -> TrainingImages:
    """Shapes-world images ``start .. start + count - 1`` and their captions."""
    samples = shapes_samples(count, size, seed=seed, start=start)
    pixels = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)  # (N, 3, S, S)
    if pixels.shape[-1] != size:  # area-average down to the training size
        pixels = F.interpolate(pixels.float(), size=(size, size), mode="area").round().to(torch.uint8)
    return TrainingImages(pixels.contiguous(), [s.caption for s in samples])


def folder_images(path: str, size: int, *, captions: Captions = Captions.ANY) -> TrainingImages:
    """The readable images of a folder, resized and centre-cropped to ``size``, with their captions."""
    folder = ImageFolder(path, size=size, require_captions=captions is Captions.REQUIRED)
    keep = range(len(folder))
    if captions is Captions.ONLY_CAPTIONED:
        keep = [i for i, c in enumerate(folder.captions) if c is not None]
        if not keep:
            raise ValueError(f"{path}: none of its {len(folder)} images has a caption; CLIP trains on image-caption "
                             f"pairs (a same-name .txt beside each image, or a metadata.jsonl)")
        if len(keep) < len(folder):
            warnings.warn(f"{path}: {len(folder) - len(keep)} of {len(folder)} images have no caption and are not "
                          f"used (caption them with 'nanoldm caption' once this CLIP is trained)", stacklevel=2)
    pixels = torch.stack([((folder[i]["image"] + 1.0) * 127.5).round().to(torch.uint8) for i in keep])
    return TrainingImages(pixels, [folder.captions[i] for i in keep])


def load_images(data: str, size: int, *, count: int, seed: int, captions: Captions = Captions.ANY) -> TrainingImages:
    """``data`` = ``"shapes"`` (``count`` images from ``seed``) or a folder (``count`` and ``seed`` unused)."""
    if data == SHAPES:
        return shapes_images(count, size, seed=seed)
    return folder_images(data, size, captions=captions)


@dataclass
class ShapesConditions:
    """The shapes world's conditions for N images. Shapes: labels (N,) int64 (-1: two objects);
    classes (N, M) int64 (-1: no object); boxes (N, M, 4); masks (N, M, H, W) bool at the training size."""
    labels: torch.Tensor
    classes: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor


def shapes_conditions(size: int, *, count: int, seed: int, max_objects: int = 2) -> ShapesConditions:
    """The conditions of the images :func:`shapes_images` returns for the same arguments, in its order
    (``max_objects``: 2, the most the shapes world draws)."""
    samples = shapes_samples(count, size, seed=seed)
    native = native_size(size)
    N, M = len(samples), max_objects
    classes, boxes = torch.full((N, M), -1, dtype=torch.int64), torch.zeros(N, M, 4)
    masks = torch.zeros(N, M, native, native, dtype=torch.bool)
    for i, s in enumerate(samples):
        for j, (cid, box) in enumerate(s.layout[:M]):
            classes[i, j], boxes[i, j] = cid, torch.tensor(box)
            masks[i, j] = torch.from_numpy(s.masks[j])
    if native != size:
        masks = F.interpolate(masks.float(), size=(size, size), mode="area") >= 0.5
    labels = torch.tensor([s.class_label for s in samples], dtype=torch.int64)
    return ShapesConditions(labels, classes, boxes, masks)


@dataclass(frozen=True)
class ImageSource:
    """A trainer's ``data``: ``path`` = ``"shapes"`` or a folder; ``count`` shapes-world images (folders: all);
    ``size`` the image side (None: the trainer's default, e.g. the base model's)."""
    path: str
    count: int = 2000
    size: int | None = None

    @property
    def is_shapes(self) -> bool:
        return self.path == SHAPES

    def load(self, size: int, *, seed: int, captions: Captions = Captions.ANY) -> TrainingImages:
        """The images at ``size``; the shapes world draws them from ``seed``."""
        return load_images(self.path, size, count=self.count, seed=seed, captions=captions)

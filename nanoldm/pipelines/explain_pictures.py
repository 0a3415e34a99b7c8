"""Pictures of an :class:`~nanoldm.pipelines.explain.Explanation`: attention maps over the image, labelled, and the
trajectory strip, enlarged so that a 32x32 image can be seen (what ``nanoldm explain`` writes and the server sends).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from nanoldm.pipelines.explain import Explanation, WordAttention
from nanoldm.pipelines.images import image_grid

DISPLAY_SIZE = 256  # small images are enlarged (nearest neighbour) to about this many pixels a side
LABEL_HEIGHT = 18
# colour stops of the heat map, from no attention (dark blue) to the most (yellow)
_STOPS = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], dtype=np.float32)


def enlarge(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """``image`` scaled up by a whole factor (nearest neighbour: pixels stay sharp) to about ``size`` a side."""
    factor = max(1, size // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def heat(attention: torch.Tensor) -> np.ndarray:
    """A map stretched to [0, 1] (its own minimum to its own maximum), coloured.

    Shapes: attention (H, W) -> (H, W, 3) uint8."""
    a = attention.float().numpy()
    a = (a - a.min()) / max(float(a.max() - a.min()), 1e-12)
    position = a * (len(_STOPS) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_STOPS) - 2)
    t = (position - low)[..., None]
    return ((1 - t) * _STOPS[low] + t * _STOPS[low + 1]).round().astype(np.uint8)


def word_picture(image: Image.Image, word: WordAttention, *, size: int = DISPLAY_SIZE) -> Image.Image:
    """The word's attention map laid over the image (enlarged), with the word and its share written below."""
    colours = Image.fromarray(heat(word.attention)).resize(image.size, Image.Resampling.BILINEAR)
    blended = enlarge(Image.blend(image.convert("RGB"), colours, 0.6), size)
    return labelled(blended, f"{word.word}  {100 * word.share:.1f}%")


def labelled(image: Image.Image, text: str) -> Image.Image:
    """``image`` with a white band below it carrying ``text``."""
    out = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), "white")
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((4, image.height + 3), text, fill="black")
    return out


def strip_picture(explanation: Explanation, *, size: int = 96) -> Image.Image:
    """The trajectory, each step enlarged to about ``size`` pixels, left to right."""
    return image_grid([enlarge(step, size) for step in explanation.trajectory], len(explanation.trajectory))

"""A1111's "Inpaint area: Only masked" (``inpaint_full_res``): inpaint a crop around the mask at the full
generation size, then paste it back into the picture at its own size (``modules/masking.py``:
``get_crop_region``, ``expand_crop_region``; ``processing.py``: ``StableDiffusionProcessingImg2Img.init`` and
``apply_overlay``). Small masked details get all of the model's pixels."""
from __future__ import annotations

import numpy as np
from PIL import Image

from nanoldm.pipelines.images import fit_image

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)


def crop_region(mask: Image.Image, padding: int = 0) -> Box | None:
    """The box around every non-zero pixel of ``mask``, grown by ``padding`` and kept inside it; None when the
    mask is empty (A1111 then inpaints the whole picture)."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    w, h = mask.size
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, w), min(y2 + padding, h)


def expand_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """``box`` grown on its short side to the aspect ratio of width x height, centred, shifted back inside the
    picture at its edges (A1111's ``expand_crop_region``, integer arithmetic as there)."""
    x1, y1, x2, y2 = box
    if (x2 - x1) / (y2 - y1) > width / height:  # too wide: grow the height
        grow = int((x2 - x1) / (width / height) - (y2 - y1))
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
        y1, y2 = _inside(y1, y2, image_height)
    else:
        grow = int((y2 - y1) * (width / height) - (x2 - x1))
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
        x1, x2 = _inside(x1, x2, image_width)
    return x1, y1, x2, y2


def _inside(lo: int, hi: int, size: int) -> tuple[int, int]:
    if hi >= size:
        lo, hi = lo - (hi - size), size
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, size)


def masked_crop(image: Image.Image, mask: Image.Image, padding: int, size: tuple[int, int]):
    """(region, image crop, mask crop), both crops fitted to ``size`` by "resize and fill"; None for an empty
    mask."""
    box = crop_region(mask, padding)
    if box is None:
        return None
    box = expand_region(box, *size, *image.size)
    return box, fit_image(image.crop(box), size, "resize and fill"), fit_image(mask.crop(box), size, "resize and fill")


def paste_back(generated: Image.Image, image: Image.Image, mask: Image.Image, box: Box, *,
               overlay: bool = True, threshold: int = 128) -> Image.Image:
    """The generated crop scaled to the region ("crop and resize") and pasted into the picture; with ``overlay``
    the picture's own pixels are kept outside the mask."""
    x1, y1, x2, y2 = box
    out = image.convert("RGB").copy()
    out.paste(fit_image(generated.convert("RGB"), (x2 - x1, y2 - y1), "crop and resize"), (x1, y1))
    if not overlay:
        return out
    keep = np.asarray(mask.convert("L")) < threshold
    pixels = np.asarray(out).copy()
    pixels[keep] = np.asarray(image.convert("RGB"))[keep]
    return Image.fromarray(pixels)

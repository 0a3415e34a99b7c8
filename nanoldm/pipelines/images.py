"""Conversions between PIL images and the tensors the networks use."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps


def load_image(path) -> Image.Image:
    """Open an image file fully (so a truncated file fails here, with its name), as RGB."""
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))  # phone photos: apply the EXIF rotation
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: unreadable or corrupt image ({' '.join(str(e).split())})") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGBA/LA/palette-with-alpha are composited on white; 16-bit and greyscale converted."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
    return im.convert("RGB")


def pil_to_tensor(images: list[Image.Image], size: tuple[int, int], mode: str = "just resize") -> torch.Tensor:
    """RGB images fitted to ``size`` = (width, height) by ``fit_image``. Shapes: -> (B, 3, H, W) in [-1, 1]."""
    arrays = [np.asarray(fit_image(_to_rgb(im), size, mode), dtype=np.float32) / 127.5 - 1.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


MASK_THRESHOLD = 128  # a mask's grey levels from here up mark the region to repaint


def mask_to_tensor(mask: Image.Image, size: tuple[int, int], mode: str = "just resize") -> torch.Tensor:
    """White (>= MASK_THRESHOLD) marks the region to repaint; fitted like the image.
    Shapes: -> (1, 1, H, W) of 0/1 floats."""
    arr = np.asarray(fit_image(mask.convert("L"), size, mode), dtype=np.float32)
    return torch.from_numpy((arr >= MASK_THRESHOLD).astype(np.float32))[None, None]


def fit_image(im: Image.Image, size: tuple[int, int], mode: str = "just resize") -> Image.Image:
    """``im`` as ``size`` = (width, height), as A1111's resize modes make it (``modules/images.resize_image``, with
    its default Lanczos resampling): "just resize" stretches the picture; "crop and resize" scales it to cover the
    size and keeps the middle; "resize and fill" scales it to fit inside, centred, and fills the two margins by
    stretching the picture's outermost row (or column) over them."""
    (w, h), (iw, ih) = size, im.size
    if mode == "just resize":
        return _resize(im, (w, h))
    wider = w / h > iw / ih  # the target is wider than the picture
    if (mode == "crop and resize") == wider:  # the picture's width becomes w
        sw, sh = w, ih * w // iw
    else:  # its height becomes h
        sw, sh = iw * h // ih, h
    scaled = _resize(im, (sw, sh))
    out = Image.new(im.mode, (w, h))
    out.paste(scaled, (w // 2 - sw // 2, h // 2 - sh // 2))
    if mode == "resize and fill" and sh < h and (fill := h // 2 - sh // 2) > 0:  # margins above and below
        out.paste(scaled.resize((w, fill), box=(0, 0, w, 0)), (0, 0))
        out.paste(scaled.resize((w, fill), box=(0, sh, w, sh)), (0, fill + sh))
    elif mode == "resize and fill" and sw < w and (fill := w // 2 - sw // 2) > 0:  # margins left and right
        out.paste(scaled.resize((fill, h), box=(0, 0, 0, h)), (0, 0))
        out.paste(scaled.resize((fill, h), box=(sw, 0, sw, h)), (fill + sw, 0))
    return out


def tensor_to_pil(x: torch.Tensor, rounding: str = "round") -> list[Image.Image]:
    """Shapes: (B, 3, H, W) in [-1, 1] -> B RGB images. ``rounding``: "round" to the nearest 8-bit value
    (diffusers: ``(x / 2 + 0.5) * 255`` rounded) or "truncate" (A1111: ``(255 * ((x + 1) / 2)).astype(uint8)``)."""
    if rounding == "truncate":
        x = ((x.detach().float().cpu() + 1.0) / 2.0).clamp(0, 1)
        # a value a float rounding below a level is that level: pixels that came in as 8 bits (inpainting's
        # overlay of the original) go back out unchanged; A1111 pastes those in PIL instead
        arr = (255.0 * x.permute(0, 2, 3, 1).numpy() + 1e-4).astype(np.uint8)
        return [Image.fromarray(a) for a in arr]
    if rounding != "round":
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    x = (x.detach().float().cpu() / 2 + 0.5).clamp(0, 1)
    arr = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def _resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im if im.size == tuple(size) else im.resize(size, Image.Resampling.LANCZOS)


def grid_columns(count: int) -> int:
    """Columns of A1111's default grid of ``count`` images: rows = the largest divisor of ``count`` not above its
    square root (``modules/images.image_grid`` with ``n_rows`` -1)."""
    rows = max(1, math.isqrt(count))
    while count % rows:
        rows -= 1
    return count // rows


def image_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Paste equally sized images into rows of ``columns`` (sample rows of the trainers, eval grids)."""
    w, h = images[0].size
    rows = -(-len(images) // columns)  # ceil
    grid = Image.new("RGB", (w * columns, h * rows), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % columns) * w, (i // columns) * h))
    return grid


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's ``inpainting_fill`` 0 ("fill"): the region to repaint takes the colours around it, blurred ever
    less (large radii first, the unmasked pixels last and sharp), so the model starts from its surroundings rather
    than from what was there. Pixels outside the mask are unchanged."""
    keep = mask.convert("L").point(lambda v: 0 if v >= MASK_THRESHOLD else 255)  # what the pipeline keeps
    known = Image.new("RGBa", image.size)
    known.paste(image.convert("RGBA").convert("RGBa"), mask=keep)  # premultiplied: blurs ignore the hole
    out = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA") if radius else known.convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(layer)
    return out.convert("RGB")

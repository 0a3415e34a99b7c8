"""Images in and out of the API: base64 strings (bare or ``data:image/...;base64,`` URLs, as A1111 accepts them)
-> PIL images, and PIL images -> base64 PNGs carrying their infotext in the ``parameters`` chunk.

Only data is decoded: a string that is not base64 of an image is a ValueError (the API's 422), never a URL to
fetch or a path to open.
"""
from __future__ import annotations

import base64
import binascii
import io

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from nanoldm.options import RESIZE_MODES
from nanoldm.pipelines.images import fit_image, load_image
from nanoldm.pipelines.infotext import PNG_KEY

MAX_PIXELS = 64 * 1024 * 1024  # an uploaded image larger than this is refused before it is decoded


def decode_image(data: str, what: str = "image") -> Image.Image:
    """A base64 image (any format PIL reads) fully loaded, RGB, EXIF rotation applied."""
    try:
        return load_image(_image_bytes(data, what))
    except ValueError as e:
        reason = str(e).partition(": ")[2]  # load_image names the file; here there is none
        raise ValueError(f"{what}: {reason}") from None


def decode_raw(data: str, what: str = "image") -> Image.Image:
    """A base64 image as stored, its mode and text chunks (``info``) kept: what PNG info reads."""
    buffer = _image_bytes(data, what)  # a clear error for anything but an image
    try:
        with Image.open(buffer) as im:
            im.load()  # text chunks after the image data reach ``info`` only now
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what}: not a readable image ({' '.join(str(e).split())})") from None


def _image_bytes(data: str, what: str) -> io.BytesIO:
    if not isinstance(data, str) or not data.strip():
        raise ValueError(f"{what}: empty; expected a base64 encoded image")
    text = data.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise ValueError(f"{what}: a data URL must be base64 encoded")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what}: not valid base64") from None
    buffer = io.BytesIO(raw)
    try:
        with Image.open(buffer) as im:
            _check_pixels(im, what)
    except UnidentifiedImageError:
        raise ValueError(f"{what}: base64 that is not an image (no image format recognised)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what}: base64 that is not an image ({' '.join(str(e).split())})") from None
    buffer.seek(0)
    return buffer


def _check_pixels(im: Image.Image, what: str) -> None:
    if im.width * im.height > MAX_PIXELS:
        raise ValueError(f"{what}: {im.width}x{im.height} pixels is larger than the server accepts")


def encode_png(image: Image.Image) -> str:
    """A base64 PNG; the image's ``parameters`` infotext goes into the PNG's text chunk, as the CLI writes it."""
    info = PngInfo()
    if isinstance(image.info.get(PNG_KEY), str):
        info.add_text(PNG_KEY, image.info[PNG_KEY])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def resize_for(image: Image.Image, size: tuple[int, int], mode: int) -> Image.Image:
    """A1111's ``resize_mode`` number to ``size`` = (width, height) by ``images.fit_image``: 0 just resize (also 3,
    its latent upscale), 1 crop and resize, 2 resize and fill."""
    return fit_image(image, size, RESIZE_MODES[mode if mode < 3 else 0])


def prepare_mask(mask: Image.Image, size: tuple[int, int], *, blur_x: int, blur_y: int, invert: bool,
                 mode: int = 0) -> Image.Image:
    """The mask as A1111 uses it: greyscale (a PNG's transparency, where it has some), inverted if asked, blurred,
    fitted to the image as the image is (``resize_mode``). White: repaint."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1] != (255, 255):
        mask = mask.getchannel("A")
    mask = mask.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if blur_x or blur_y:
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
    return resize_for(mask, size, mode)

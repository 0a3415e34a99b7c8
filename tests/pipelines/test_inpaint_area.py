"""A1111's "Inpaint area: Only masked": the crop region as ``modules/masking.py`` computes it, the crop inpainted
at the generation size and pasted back into the picture at its own size."""
import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.inpaint_area import crop_region, expand_region, paste_back
from nanoldm.pipelines.images import fit_image
from nanoldm.pipelines.pipeline import Pipeline
from tests.conftest import TINY


def box_mask(size, box):
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.mark.parametrize("box, padding, processing, image, want", [
    ((40, 20, 48, 28), 4, (32, 32), (64, 48), (36, 16, 52, 32)),  # square already: padding only
    ((0, 0, 128, 32), 0, (512, 512), (512, 512), (0, 0, 128, 128)),  # A1111's docstring example: 128x32 -> 128x128
    ((10, 40, 30, 48), 0, (32, 32), (64, 48), (10, 28, 30, 48)),  # grown upwards at the bottom edge
    ((0, 0, 10, 40), 2, (64, 32), (100, 60), (0, 0, 84, 42)),  # grown rightwards from the left edge
])
def test_the_region_is_a1111s(box, padding, processing, image, want):
    region = expand_region(crop_region(box_mask(image, box), padding), *processing, *image)
    assert region == want
    assert crop_region(Image.new("L", (8, 8), 0)) is None  # an empty mask: the whole picture


def test_only_masked_inpaints_the_crop_and_keeps_the_picture_and_its_size(tokenizer):
    torch.manual_seed(0)
    pipe = Pipeline(LatentDiffusion.from_config(TINY, tokenizer=tokenizer))
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    mask = box_mask(image.size, (40, 20, 48, 28))
    kw = dict(seed=3, steps=3, progress=False)
    (out,) = pipe.inpaint(image, mask, "a square", inpaint_full_res=True, inpaint_full_res_padding=4, **kw)
    assert out.size == image.size
    m = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(out)[~m], np.asarray(image)[~m])
    # the definition: the 16x16 region around the mask, inpainted at the native 32x32, scaled back and pasted
    box = (36, 16, 52, 32)
    (piece,) = pipe.inpaint(fit_image(image.crop(box), (32, 32), "resize and fill"),
                            fit_image(mask.crop(box), (32, 32), "resize and fill"), "a square", overlay=False, **kw)
    assert np.array_equal(np.asarray(out), np.asarray(paste_back(piece, image, mask, box)))
    assert "Inpaint area: Only masked, Masked area padding: 4" in out.info["parameters"]
    assert not np.array_equal(np.asarray(out)[m], np.asarray(image)[m])

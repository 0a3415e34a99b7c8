"""Fitting an input image to the target size, as A1111's resize modes do (modules/images.resize_image)."""
import numpy as np
import pytest
from PIL import Image

from nanoldm.pipelines.images import fit_image


@pytest.fixture
def picture():  # 40 wide, 20 high
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["just resize", "crop and resize", "resize and fill"])
@pytest.mark.parametrize("size", [(20, 20), (40, 40), (64, 16), (16, 64), (40, 20)])
def test_every_mode_gives_the_size(picture, mode, size):
    assert fit_image(picture, size, mode).size == size


def test_just_resize_stretches(picture):
    assert fit_image(picture, (16, 64)).tobytes() == picture.resize((16, 64), Image.Resampling.LANCZOS).tobytes()


def test_crop_and_resize_keeps_the_middle(picture):
    out = np.asarray(fit_image(picture, (20, 20), "crop and resize"))  # height 20 kept: columns 10..30
    assert np.array_equal(out, np.asarray(picture)[:, 10:30])


def test_resize_and_fill_stretches_the_edges_over_the_margins(picture):
    out = np.asarray(fit_image(picture, (40, 40), "resize and fill")).astype(int)  # the picture in rows 10..30
    pic = np.asarray(picture).astype(int)
    assert np.array_equal(out[10:30], pic)
    for margin, edge in ((out[:10], pic[0]), (out[30:], pic[-1])):
        assert (margin == margin[0]).all()  # every margin row the same: the edge stretched (resampled at the edge)
        assert np.abs(margin[0] - edge).mean() < 12 and np.corrcoef(margin[0].ravel(), edge.ravel())[0, 1] > 0.9

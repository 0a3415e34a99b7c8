"""The one reader of every trainer's images: the shapes world in memory or a folder, with a caption policy."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanoldm.data.export import export_shapes
from nanoldm.data.folder import ImageFolder
from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.sources import (Captions, ImageSource, load_images, shapes_conditions, shapes_images,
                                  shapes_samples)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eight shapes images at 32x32, the last two without a caption."""
    out = tmp_path_factory.mktemp("shapes")
    export_shapes(ShapesWorld(size=32, seed=5, count=8), out, uncaptioned=0.25, progress=False)
    return out


def test_shapes_images_are_the_world_s_pixels_and_captions():
    images = shapes_images(6, 32, seed=3, start=2)
    world = ShapesWorld(size=32, seed=3, count=8)
    assert images.pixels.dtype == torch.uint8 and images.pixels.shape == (6, 3, 32, 32)
    assert torch.equal(images.pixels, torch.from_numpy(np.stack([world.sample(i).image for i in range(2, 8)]))
                       .permute(0, 3, 1, 2))
    assert images.captions == [world.sample(i).caption for i in range(2, 8)]


def test_smaller_sizes_are_area_averages_of_the_rendered_ones():
    small, full = shapes_images(4, 16, seed=0), shapes_images(4, 32, seed=0)
    assert small.pixels.shape == (4, 3, 16, 16) and small.captions == full.captions
    expected = F.avg_pool2d(full.pixels.float(), 2).round().to(torch.uint8)
    assert torch.equal(small.pixels, expected)
    with pytest.raises(ValueError, match="cannot make 128x128"):
        shapes_images(1, 128, seed=0)


def test_unit_range_is_the_folder_reader_s(folder):
    images = load_images(str(folder), 32, count=0, seed=0)
    reference = ImageFolder(folder, size=32)
    assert torch.equal(images.unit(), torch.stack([reference[i]["image"] for i in range(len(reference))]))
    assert images.captions == reference.captions


def test_caption_policies(folder):
    assert sum(c is None for c in load_images(str(folder), 32, count=0, seed=0).captions) == 2
    with pytest.raises(ValueError, match="have no caption"):
        load_images(str(folder), 32, count=0, seed=0, captions=Captions.REQUIRED)
    with pytest.warns(UserWarning, match="2 of 8 images have no caption"):
        only = load_images(str(folder), 32, count=0, seed=0, captions=Captions.ONLY_CAPTIONED)
    assert len(only) == 6 and None not in only.captions


def test_image_source_reads_the_shapes_world_from_the_seed():
    source = ImageSource("shapes", count=5, size=16)
    assert source.is_shapes and not ImageSource("some/folder").is_shapes
    assert torch.equal(source.load(16, seed=1).pixels, shapes_images(5, 16, seed=1).pixels)


def test_conditions_follow_the_images_order():
    conds = shapes_conditions(16, count=12, seed=0)
    samples = shapes_samples(12, 16, seed=0)
    assert conds.labels.tolist() == [s.class_label for s in samples]
    assert conds.masks.shape == (12, 2, 16, 16) and conds.masks.dtype == torch.bool
    one = [i for i, s in enumerate(samples) if len(s.layout) == 1]
    assert (conds.classes[one, 1] == -1).all() and not conds.masks[one, 1].any()

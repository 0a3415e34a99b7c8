"""The server's pure parts: base64 images, resize modes, masks, A1111's "fill", the checkpoint catalogue."""
from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from nanoldm.builtin import builtin_model_path
from nanoldm.server.catalog import CheckpointCatalog
from nanoldm.pipelines.images import fill_masked
from nanoldm.server.codec import decode_image, decode_raw, encode_png, prepare_mask, resize_for


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def test_images_round_trip_with_their_infotext():
    image = Image.new("RGB", (8, 4), (10, 20, 30))
    image.info["parameters"] = "a prompt\nSteps: 2, Sampler: Euler, Seed: 1"
    back = decode_raw(encode_png(image))
    assert back.info["parameters"] == image.info["parameters"] and np.array_equal(np.asarray(back), np.asarray(image))
    assert decode_image("data:image/jpeg;base64," + b64(image.convert("RGB"), "JPEG")).size == (8, 4)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert decode_image(b64(rgba)).getpixel((0, 0)) == (255, 255, 255)  # transparency on white, as load_image does


@pytest.mark.parametrize("data, words", [("", "empty"), ("not base64!", "not valid base64"),
                                         ("aGVsbG8=", "not an image"), ("data:image/png,xyz", "base64 encoded")])
def test_bad_data_is_one_clear_line(data, words):
    with pytest.raises(ValueError, match=words):
        decode_image(data, "init_images[0]")


def test_resize_modes():
    wide = Image.new("RGB", (64, 32), "red")
    wide.paste((0, 0, 255), (0, 0, 16, 32))  # a blue band on the left
    assert resize_for(wide, (32, 32), 0).size == (32, 32)
    cropped = np.asarray(resize_for(wide, (32, 32), 1))
    assert cropped[16, 0, 0] > 200  # crop and resize: the blue band is cut away
    filled = resize_for(wide, (32, 32), 2)
    assert filled.size == (32, 32) and np.asarray(filled)[16, 2, 2] > 200  # the whole picture, shrunk inside


def test_masks_are_resized_inverted_and_read_from_transparency():
    mask = Image.new("L", (8, 8), 0)
    mask.paste(255, (0, 0, 4, 8))
    ready = prepare_mask(mask, (16, 16), blur_x=0, blur_y=0, invert=True)
    assert ready.size == (16, 16) and ready.getpixel((2, 8)) == 0 and ready.getpixel((14, 8)) == 255
    painted = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    painted.putpixel((1, 1), (0, 0, 0, 255))
    assert prepare_mask(painted, (4, 4), blur_x=0, blur_y=0, invert=False).getpixel((1, 1)) == 255


def test_fill_takes_the_colours_around_and_keeps_the_rest():
    image = Image.new("RGB", (32, 32), "white")
    image.paste((255, 0, 0), (0, 0, 16, 32))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    out, before, hole = np.asarray(fill_masked(image, mask)), np.asarray(image), np.asarray(mask) > 0
    assert np.array_equal(out[~hole], before[~hole])
    assert out[16, 9, 1] < out[16, 22, 1]  # redder next to the red half, whiter next to the white one


def test_catalog_finds_titles_never_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    shutil.copy(builtin_model_path(), tmp_path / "sub" / "copy.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    catalog = CheckpointCatalog(None, tmp_path)
    assert [e.name for e in catalog.entries] == ["shapes.safetensors", "sub/copy.safetensors"]
    copy = catalog.find("sub/copy.safetensors")
    assert catalog.find("sub/copy") is copy and copy.title == "sub/copy.safetensors"
    copy.compute_hash()
    assert catalog.find(copy.title) is copy and catalog.find(copy.hash) is copy and copy.title.endswith("]")
    for bad in (str(tmp_path / "sub" / "copy.safetensors"), "../sub/copy.safetensors", "notes.txt"):
        with pytest.raises(ValueError, match="unknown model"):
            catalog.find(bad)
    (tmp_path / "new.ckpt").write_bytes(b"")
    catalog.refresh()
    assert catalog.find("new.ckpt") and catalog.find(copy.title) is copy  # known hashes survive a refresh

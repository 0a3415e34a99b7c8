"""``ImageFolder``: any image folder as training data; captions from metadata.jsonl or .txt; bad files skipped."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.data.export import export_shapes
from nanoldm.data.folder import ImageFolder, collate
from nanoldm.data.shapes import ShapesWorld


def pixels(item) -> np.ndarray:
    """Shapes: item["image"] (3, H, W) in [-1, 1] -> (H, W, 3) float in [0, 255]."""
    return ((item["image"].permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.float64)


def solid(colour, size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def write_metadata(folder, rows):
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def open_quietly(path, **kwargs) -> ImageFolder:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folder with nothing wrong must not warn
        return ImageFolder(path, **kwargs)


def test_every_mode_becomes_rgb(tmp_path):
    half_alpha = np.zeros((8, 8, 4), np.uint8)
    half_alpha[:, :4] = (255, 0, 0, 0)  # transparent red -> white
    half_alpha[:, 4:] = (0, 0, 255, 255)  # opaque blue stays blue
    Image.fromarray(half_alpha).save(tmp_path / "rgba.png")
    solid((10, 20, 30)).save(tmp_path / "rgb.png")
    solid(100, mode="L").save(tmp_path / "l.png")
    palette = solid(1, mode="P")
    palette.putpalette([0, 0, 0, 200, 50, 25] + [0] * 762)
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "p_transparent.png", transparency=1)
    Image.fromarray(np.full((8, 8), 257 * 60, np.uint16)).save(tmp_path / "i16.png")
    solid((200, 30, 40)).save(tmp_path / "photo.JPG", quality=95)
    expected = {"rgb.png": (10, 20, 30), "l.png": (100, 100, 100), "p.png": (200, 50, 25),
                "p_transparent.png": (255, 255, 255), "i16.png": (60, 60, 60)}
    data = open_quietly(tmp_path, size=8)
    items = {p.name: data[i] for i, p in enumerate(data.paths)}
    assert sorted(items) == sorted([*expected, "rgba.png", "photo.JPG"])
    for name, colour in expected.items():
        assert items[name]["image"].shape == (3, 8, 8) and items[name]["image"].dtype == torch.float32
        assert np.allclose(pixels(items[name]), colour, atol=1e-4), name
    rgba = pixels(items["rgba.png"])
    assert np.allclose(rgba[:, :4], 255, atol=1e-4) and np.allclose(rgba[:, 4:], (0, 0, 255), atol=1e-4)
    assert np.abs(pixels(items["photo.JPG"]) - (200, 30, 40)).max() < 6


def test_other_formats_and_the_first_frame_of_a_gif(tmp_path):
    for ext in ("webp", "bmp", "tif"):
        solid((0, 128, 255)).save(tmp_path / f"a.{ext}", **({"lossless": True} if ext == "webp" else {}))
    solid((255, 0, 0)).save(tmp_path / "b.gif", save_all=True, append_images=[solid((0, 0, 255))])
    data = open_quietly(tmp_path, size=8)
    assert [p.name for p in data.paths] == ["a.bmp", "a.tif", "a.webp", "b.gif"]
    for item in (data[0], data[1], data[2]):
        assert np.allclose(pixels(item), (0, 128, 255), atol=1e-4)
    assert np.allclose(pixels(data[3]), (255, 0, 0), atol=1e-4)


@pytest.mark.parametrize("wide", [True, False])
def test_short_side_resized_then_centre_cropped(tmp_path, wide):
    # 128 x 64: a 64 x 64 centre square, black above its middle and white below, between red margins
    pattern = np.zeros((64, 128, 3), np.uint8)
    pattern[:, :32] = pattern[:, 96:] = (255, 0, 0)
    pattern[32:, 32:96] = 255
    if not wide:  # 64 x 128: the same square between red margins above and below, left half black
        pattern = pattern.transpose(1, 0, 2)
    Image.fromarray(pattern).save(tmp_path / "pattern.png")
    out = pixels(open_quietly(tmp_path, size=32)[0])
    assert out.shape == (32, 32, 3)
    if not wide:
        out = out.transpose(1, 0, 2)
    redness = out[..., 0] - out[..., 1]
    # a crop one pixel off would hold pure red; LANCZOS reaches 3 pixels past the crop edge, so the outer
    # columns are tinted a little (as resizing the whole image and then cropping tints them), the rest is grey
    assert redness.max() < 20 and np.abs(redness[:, 3:-3]).max() < 1
    inner = out[:, 3:-3]
    assert inner[:14].max() < 2 and inner[18:].min() > 253  # black above, white below (LANCZOS rings by 1)
    assert np.allclose(inner[15] + inner[16], 255, atol=1)  # the edge between them lies exactly in the middle


def test_non_square_sizes_and_upscaling(tmp_path):
    solid((1, 2, 3), size=(100, 33)).save(tmp_path / "wide.png")
    solid((1, 2, 3), size=(5, 70)).save(tmp_path / "tall.png")
    solid((1, 2, 3), size=(4, 4)).save(tmp_path / "tiny.png")
    data = open_quietly(tmp_path, size=16)
    for item in data:
        assert item["image"].shape == (3, 16, 16) and np.allclose(pixels(item), (1, 2, 3), atol=0.5)


def test_captions_from_metadata_txt_and_caption_files(tmp_path):
    for name in ("a", "b", "c", "d", "e", "f"):
        solid((0, 0, 0)).save(tmp_path / f"{name}.png")
    (tmp_path / "a.txt").write_text("from txt a")  # loses to metadata.jsonl
    (tmp_path / "b.txt").write_text("\ufefffrom txt b\n")  # a byte-order mark and a newline are dropped
    (tmp_path / "c.caption").write_text("from caption c")
    (tmp_path / "d.txt").write_text("  \n")  # whitespace only: no caption
    (tmp_path / "e.txt").write_text("from txt e")  # metadata's empty text falls through to it
    write_metadata(tmp_path, [{"file_name": "a.png", "text": "from metadata a", "class_label": 3},
                              {"file_name": "e.png", "text": "", "layout": [[1, [0, 0, 1, 1]]]},
                              {"file_name": "f.png", "caption": "from metadata f"}])
    data = open_quietly(tmp_path, size=8)
    assert data.captions == ["from metadata a", "from txt b", "from caption c", None, "from txt e",
                             "from metadata f"]
    assert [p.name for p in data.captionless()] == ["d.png"]
    assert data.fields == ["class_label", "layout"]
    assert (data[0]["class_label"], data[0]["layout"]) == (3, None)
    assert (data[4]["class_label"], data[4]["layout"]) == (None, [[1, [0, 0, 1, 1]]])
    assert data[5]["caption"] == "from metadata f" and data[5]["path"] == str(tmp_path / "f.png")


def test_subfolders_nested_metadata_and_hidden_files(tmp_path):
    for sub in ("cats", "dogs"):
        (tmp_path / sub).mkdir()
        solid((0, 0, 0)).save(tmp_path / sub / "1.png")
    solid((0, 0, 0)).save(tmp_path / "top.png")
    write_metadata(tmp_path / "dogs", [{"file_name": "1.png", "text": "a dog"}])  # relative to dogs/
    write_metadata(tmp_path, [{"file_name": "cats/1.png", "text": "a cat"}])
    (tmp_path / "._top.png").write_bytes(b"AppleDouble junk")  # hidden: ignored, no warning
    (tmp_path / ".cache").mkdir()
    solid((0, 0, 0)).save(tmp_path / ".cache" / "x.png")
    (tmp_path / "notes.md").write_text("not an image")
    data = open_quietly(tmp_path, size=8)
    assert [p.relative_to(tmp_path).as_posix() for p in data.paths] == ["cats/1.png", "dogs/1.png", "top.png"]
    assert data.captions == ["a cat", "a dog", None]


def test_an_exported_shapes_world_round_trips(tmp_path):
    world = ShapesWorld(count=8, seed=3)
    export_shapes(world, tmp_path / "shapes", progress=False)
    data = open_quietly(tmp_path / "shapes", size=32)
    assert len(data) == len(world) and not data.captionless()
    assert {"class_label", "layout", "objects", "relation"} <= set(data.fields)
    for item, sample in zip(data, world):
        assert item["caption"] == sample.caption and item["class_label"] == sample.class_label
        assert [l["class_id"] for l in item["layout"]] == [cid for cid, _ in sample.layout]
        assert np.array_equal(pixels(item).round(), sample.image)  # 32x32 in, 32x32 out: pixels untouched
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=8, collate_fn=collate)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["caption"] == [s.caption for s in world]


def test_corrupt_files_are_skipped_with_one_warning(tmp_path):
    solid((9, 9, 9), size=(32, 32)).save(tmp_path / "good.png")
    png = (tmp_path / "good.png").read_bytes()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "noise.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "noise.png").read_bytes()[:500])
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a jpeg" * 10)
    (tmp_path / "empty.webp").write_bytes(b"")
    write_metadata(tmp_path, [{"file_name": "gone.png", "text": "deleted"}])
    with pytest.warns(UserWarning) as record:
        data = ImageFolder(tmp_path, size=8)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 3 of 5" in message and "truncated" in message
    for name in ("truncated.png", "garbage.jpg", "empty.webp", "gone.png"):
        assert name in message
    assert [p.name for p in data.paths] == ["good.png", "noise.png"]
    assert sorted(p.name for p in data.skipped) == ["empty.webp", "garbage.jpg", "truncated.png"]
    assert len(png) > 0 and len([data[i] for i in range(len(data))]) == 2


def test_many_corrupt_files_are_named_a_few_at_a_time(tmp_path):
    solid((0, 0, 0)).save(tmp_path / "ok.png")
    for i in range(9):
        (tmp_path / f"bad{i}.png").write_bytes(b"junk")
    with pytest.warns(UserWarning, match=r"skipped 9 of 10 .* and 4 more"):
        ImageFolder(tmp_path, size=8)


def test_missing_empty_and_unreadable_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="file.png"):
        ImageFolder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "caption.txt").write_text("a caption but no image")
    with pytest.raises(ValueError, match="empty holds no images"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"bad: none of its 1 image files"):
        ImageFolder(tmp_path / "bad")


def test_malformed_metadata_is_a_clear_error(tmp_path):
    solid((0, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "ok"}\n{"file_name": oops}\n')
    with pytest.raises(ValueError, match="metadata.jsonl, line 2: not valid JSON"):
        ImageFolder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"text": "no file name"}\n')
    with pytest.raises(ValueError, match="line 1: .* \"file_name\""):
        ImageFolder(tmp_path)


def test_require_captions(tmp_path):
    for i in range(8):
        solid((0, 0, 0)).save(tmp_path / f"{i}.png")
        if i < 2:
            (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    with pytest.raises(ValueError, match=r"6 of 8 images .* no caption: 2.png, 3.png, 4.png, 5.png, 6.png and 1 more"):
        ImageFolder(tmp_path, size=8, require_captions=True)
    for i in range(2, 8):
        (tmp_path / f"{i}.txt").write_text(f"caption {i}")
    assert len(ImageFolder(tmp_path, size=8, require_captions=True)) == 8


def test_uncached_reads_the_same_and_survives_a_file_deleted_mid_training(tmp_path):
    for i in range(3):
        solid((i, 2 * i, 3 * i), size=(12, 10)).save(tmp_path / f"{i}.png")
    cached, lazy = open_quietly(tmp_path, size=8), open_quietly(tmp_path, size=8, cache=False)
    assert cached._pixels is not None and lazy._pixels is None
    for a, b in zip(cached, lazy):
        assert torch.equal(a["image"], b["image"]) and a["path"] == b["path"]
    assert torch.equal(cached[-1]["image"], cached[2]["image"])
    with pytest.raises(IndexError):
        cached[3]
    (tmp_path / "1.png").unlink()
    with pytest.warns(UserWarning, match="1.png became unreadable"):
        item = lazy[1]
    assert item["path"] == str(tmp_path / "2.png") and torch.equal(item["image"], cached[2]["image"])

"""``--n-iter`` (A1111's batch count) and ``--grid``: seeds continue across batches, every image is saved with its
own infotext, and the grid holds the images in A1111's layout with the first image's infotext."""
import numpy as np
from PIL import Image

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.pipelines.infotext import parse_infotext, read_png_infotext


def test_batches_continue_the_seeds_and_the_grid_holds_every_image(tmp_path, tiny_model_16px):
    save_model(tiny_model_16px, tmp_path / "m.safetensors")
    out = tmp_path / "out"
    assert main(["txt2img", "a red circle", "--model", str(tmp_path / "m.safetensors"), "--steps", "1", "--seed",
                 "10", "--batch-size", "2", "--n-iter", "3", "--grid", "--out", str(out)]) == 0
    paths = sorted(p for p in out.glob("*.png") if not p.name.startswith("grid"))
    seeds = [int(parse_infotext(read_png_infotext(p))["Seed"]) for p in paths]
    assert seeds == list(range(10, 16)) and [p.name for p in paths] == [f"{i:05d}-{10 + i}.png" for i in range(6)]
    (grid_path,) = out.glob("grid-*.png")
    grid = Image.open(grid_path)
    assert grid.size == (3 * 16, 2 * 16)  # 6 images: 2 rows of 3, as A1111 lays them out
    assert read_png_infotext(grid_path) == read_png_infotext(paths[0])
    pixels = np.asarray(grid.convert("RGB"))
    for i, path in enumerate(paths):
        row, col = divmod(i, 3)
        assert np.array_equal(pixels[16 * row:16 * row + 16, 16 * col:16 * col + 16], np.asarray(Image.open(path)))

"""Generated images as numbered PNG files: ``00007-<seed>.png`` with the infotext inside, never overwriting one
(the command line's ``--out`` folder and a server's ``--save-dir``)."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from nanoldm.checkpoint.formats import check_folder
from nanoldm.pipelines.images import grid_columns, image_grid
from nanoldm.pipelines.infotext import PNG_KEY, save_png


def save_images(images: list[Image.Image], folder: str | Path) -> list[Path]:
    """Write each image (with ``info["seed"]`` and ``info["parameters"]``, as ``Pipeline`` returns them) as a
    new PNG in ``folder`` (created if missing); returns the paths."""
    folder = Path(folder)
    check_folder(folder)  # a file in the way: one clear error
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        path = next_free_path(folder, image.info["seed"])
        save_png(image, path, image.info.get(PNG_KEY))
        paths.append(path)
    return paths


def save_grid(images: list[Image.Image], folder: str | Path) -> Path:
    """All ``images`` in one PNG, ``grid-0003.png`` (numbered after those there), laid out as A1111 lays out its
    grids and carrying the first image's infotext, as A1111's grids do (each image keeps its own in its file)."""
    folder = Path(folder)
    check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.stem[5:]) for p in folder.glob("grid-*.png") if p.stem[5:].isdigit()]
    path = folder / f"grid-{max(taken, default=-1) + 1:04d}.png"
    save_png(image_grid(images, grid_columns(len(images))), path, images[0].info.get(PNG_KEY))
    return path


def next_free_path(folder: Path, seed: int) -> Path:
    """``00007-<seed>.png``: numbered after the files already there, never overwriting one."""
    taken = [int(p.name[:5]) for p in folder.glob("*.png") if p.name[:5].isdigit()]
    index = max(taken, default=-1) + 1
    while (path := folder / f"{index:05d}-{seed}.png").exists():
        index += 1
    return path

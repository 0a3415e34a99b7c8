"""Write a shapes world to a folder the way a user's own data looks: ``00000.png`` with ``00000.txt`` beside it
(the caption; the kohya convention) and ``metadata.jsonl`` (the Hugging Face imagefolder convention: one JSON
object per line with "file_name" and "text", plus our fields "class_label", "layout", "objects", "relation").

``uncaptioned``: the last share of the images is written without a caption (no ``.txt``, no "text"), as a user's
uncaptioned photos would be, for a captioner to fill in (``nanoldm caption``); their withheld caption is kept in
the field "reference_caption" only, so a captioner's work can be measured.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tqdm import tqdm

from nanoldm.data.shapes import ShapeSample, ShapesWorld

METADATA = "metadata.jsonl"
PROGRESS_FROM = 500  # a progress bar for exports of at least this many images


def export_shapes(world: ShapesWorld, directory: str | os.PathLike, *, overwrite: bool = False,
                  uncaptioned: float = 0.0, progress: bool = True) -> Path:
    """Write every sample of ``world`` into ``directory`` (created if missing) and return its path.
    A non-empty folder is refused unless ``overwrite``; then the files a previous export listed are removed
    first and anything else is left alone."""
    directory = Path(directory)
    if not 0.0 <= uncaptioned <= 1.0:
        raise ValueError(f"the uncaptioned share must be in [0, 1], got {uncaptioned}")
    captioned = len(world) - round(uncaptioned * len(world))
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{directory} is not empty; pass --overwrite to write into it anyway")
        _remove_previous_export(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(world) - 1)))
    rows = []
    bar = tqdm(range(len(world)), desc="shapes", unit="img", disable=not progress or len(world) < PROGRESS_FROM)
    for i in bar:
        sample = world.sample(i)
        name = f"{i:0{width}d}"
        sample.pil().save(directory / f"{name}.png")
        row = metadata_row(sample, f"{name}.png")
        if i < captioned:
            (directory / f"{name}.txt").write_text(sample.caption, encoding="utf-8")
        else:
            row["reference_caption"] = row.pop("text")
        rows.append(row)
    tmp = directory / f"{METADATA}.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, directory / METADATA)
    return directory


def export_world(world: ShapesWorld, directory: str | os.PathLike, *, overwrite: bool = False,
                 uncaptioned: float = 0.0) -> Path:
    """:func:`export_shapes`, then one line saying what was written (``nanoldm shapes export`` and ``train all``)."""
    out = export_shapes(world, directory, overwrite=overwrite, uncaptioned=uncaptioned)
    print(f"wrote {len(world)} images ({world.size}x{world.size}) with captions and metadata.jsonl to {out}")
    return out


def metadata_row(sample: ShapeSample, file_name: str) -> dict:
    """One line of metadata.jsonl: boxes are normalised (x0, y0, x1, y1); relation is null for one object."""
    return {
        "file_name": file_name,
        "text": sample.caption,
        "class_label": sample.class_label,
        "layout": [{"class_id": cid, "box": [round(v, 6) for v in box]} for cid, box in sample.layout],
        "objects": [{**o.to_dict(), "box": [round(v, 6) for v in o.box]} for o in sample.objects],
        "relation": sample.relation,
    }


def _remove_previous_export(directory: Path) -> None:
    """Delete the images, captions and metadata a previous export wrote (as its metadata.jsonl lists them)."""
    meta = directory / METADATA
    if not meta.is_file():
        return
    for line in meta.read_text(encoding="utf-8").splitlines():
        name = json.loads(line).get("file_name", "") if line.strip() else ""
        if name and Path(name).name == name:  # only plain names inside this folder
            for path in (directory / name, (directory / name).with_suffix(".txt")):
                path.unlink(missing_ok=True)
    meta.unlink()

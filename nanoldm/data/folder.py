"""Any folder of images as training data, captioned the way people caption their data sets.

Which files: every file with an image extension (``IMAGE_EXTENSIONS``, any case) in the folder and in all its
subfolders (kohya keeps one subfolder per concept), sorted by relative path; hidden files and folders (a
leading ``.``, e.g. macOS ``._x.png`` or ``.ipynb_checkpoints``) are ignored.

Captions, first found wins:
1. a row of a ``metadata.jsonl`` (the Hugging Face imagefolder convention): one JSON object per line,
   "file_name" relative to the folder holding that metadata.jsonl (one at the top or one per subfolder),
   the caption in "text" (or "caption"); its other fields (class_label, layout, ...) come with the image;
2. a same-name ``.txt`` (or ``.caption``) file beside the image (the kohya convention);
3. neither (an empty or whitespace-only caption counts as none): the caption is None (``captionless()`` lists
   them for a captioner).

Pixels: every image is decoded once at construction (``load_image``: alpha composited on white, greyscale,
palette and 16-bit converted to RGB), its short side resized to ``size`` with LANCZOS and centre-cropped to
``size`` x ``size``. A file that does not decode is skipped, and all of them are named in one warning, so
``__getitem__`` never meets a bad file mid-training. Folders whose pixels fit in ``CACHE_LIMIT_BYTES`` keep them
in memory as uint8 (2,000 images of 32x32 are 6 MB), so an epoch costs no decoding.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from nanoldm.data.export import METADATA, PROGRESS_FROM
from nanoldm.pipelines.images import load_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
CAPTION_EXTENSIONS = (".txt", ".caption")  # looked for in this order beside each image
CAPTION_COLUMNS = ("text", "caption")  # metadata.jsonl caption field, in order of preference
RESERVED = ("file_name", "image", "path") + CAPTION_COLUMNS  # metadata fields that are not passed on as extras
CACHE_LIMIT_BYTES = 512 * 2**20  # keep decoded pixels in memory when they fit in this (cache=None)
NAMED = 5  # how many file names an error or warning lists before "and N more"


class ImageFolder(Dataset):
    """A folder of images as a data set. ``item = folder[i]`` is a dict: image (3, size, size) float32 in
    [-1, 1], caption (str or None), path (str), and every metadata.jsonl field in ``fields`` (None where an
    image's row lacks it). ``paths``, ``captions``, ``metadata`` are parallel lists; ``skipped`` names the files
    that did not decode. ``cache``: keep decoded pixels in memory (None: when they fit in CACHE_LIMIT_BYTES)."""

    def __init__(self, path: str | os.PathLike, *, size: int = 32, require_captions: bool = False,
                 cache: bool | None = None, progress: bool = True):
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.root, self.size = _check_folder(path), size
        files, metadata_files = scan_folder(self.root)
        if not files:
            raise ValueError(f"{self.root} holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}, "
                             f"in subfolders too)")
        rows = read_metadata(self.root, metadata_files)
        unmatched = sorted(set(rows) - {_key(self.root, f) for f in files})
        if cache is None:
            cache = len(files) * 3 * size * size <= CACHE_LIMIT_BYTES
        pixels, self.skipped, reasons = self._decode_all(files, keep=cache, progress=progress)
        self.paths = [f for f in files if str(f) not in reasons]
        _warn_about(self.root, len(files), reasons, unmatched)
        if not self.paths:
            first = next(iter(reasons.items()))
            raise ValueError(f"{self.root}: none of its {len(files)} image files could be read "
                             f"(first: {first[0]}: {first[1]})")
        own_rows = [rows.get(_key(self.root, f), {}) for f in self.paths]
        self.captions = [_caption(f, row) for f, row in zip(self.paths, own_rows)]
        self.fields = sorted({k for row in own_rows for k in row if k not in RESERVED})
        self.metadata = [{k: row.get(k) for k in self.fields} for row in own_rows]
        self._pixels = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous() if cache else None
        if require_captions:
            self._require_captions()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        """Shapes: image (3, size, size) in [-1, 1]."""
        i = range(len(self))[i]  # negative indices; IndexError past the end
        if self._pixels is not None:
            pixels = self._pixels[i]
        else:
            i, pixels = self._load_or_next(i)
        image = pixels.float() / 127.5 - 1.0  # same mapping as pipelines.images.pil_to_tensor
        return {"image": image, "caption": self.captions[i], "path": str(self.paths[i]), **self.metadata[i]}

    def captionless(self) -> list[Path]:
        """The images with no caption, in data set order."""
        return [p for p, c in zip(self.paths, self.captions) if c is None]

    def __repr__(self) -> str:
        return (f"ImageFolder({str(self.root)!r}, size={self.size}, {len(self)} images, "
                f"{len(self.captionless())} without captions, {len(self.skipped)} skipped)")

    def _decode_all(self, files: list[Path], *, keep: bool, progress: bool):
        """Decode every file once. Returns (pixels of the good ones if ``keep``, skipped paths, {path: why})."""
        pixels, reasons = [], {}
        bar = tqdm(files, desc=f"reading {self.root.name or self.root}", unit="img",
                   disable=not progress or len(files) < PROGRESS_FROM)
        for f in bar:
            try:
                square = load_square(f, self.size)
            except Exception as e:  # noqa: BLE001 - any failure to decode one file means: skip that file
                reasons[str(f)] = _reason(e, f)
                continue
            if keep:
                pixels.append(square)
        return pixels, [Path(p) for p in reasons], reasons

    def _load_or_next(self, i: int) -> tuple[int, torch.Tensor]:
        """Decode image i; should it have become unreadable since construction, warn and use the next one."""
        for j in range(len(self)):
            k = (i + j) % len(self)
            try:
                return k, torch.from_numpy(load_square(self.paths[k], self.size)).permute(2, 0, 1)
            except Exception as e:  # noqa: BLE001 - a file changed under a running training: keep going
                warnings.warn(f"{self.paths[k]} became unreadable ({_reason(e, self.paths[k])}); "
                              f"using the next image instead", stacklevel=3)
        raise RuntimeError(f"{self.root}: every image became unreadable since the data set was opened")

    def _require_captions(self) -> None:
        missing = self.captionless()
        if missing:
            names = _first_names([_key(self.root, p) for p in missing])
            raise ValueError(f"{len(missing)} of {len(self)} images in {self.root} have no caption: {names}. "
                             f"Put a same-name .txt caption beside each, or a \"text\" field in its {METADATA} row")


def load_square(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode an image, resize its short side to ``size`` (LANCZOS) and centre-crop. Shapes: -> (size, size, 3)
    uint8. The crop box is given to the resize in source pixels, so it is centred to the sub-pixel."""
    im = load_image(path)
    w, h = im.size
    s = min(w, h)
    if (w, h) != (size, size):
        box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
        im = im.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.array(im, dtype=np.uint8)  # a writable copy, so torch.from_numpy does not warn


def scan_folder(root: Path) -> tuple[list[Path], list[Path]]:
    """(image files, metadata.jsonl files) under ``root``, recursively, hidden entries skipped, each list
    sorted by path relative to ``root``."""
    images, metadata = [], []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in names:
            if name == METADATA:
                metadata.append(Path(directory) / name)
            elif not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(Path(directory) / name)
    order = lambda p: p.relative_to(root).parts  # noqa: E731
    return sorted(images, key=order), sorted(metadata, key=order)


def read_metadata(root: Path, metadata_files: list[Path]) -> dict[str, dict]:
    """{image path relative to ``root``, posix: its row} from every metadata.jsonl; "file_name" is relative to
    the folder of the metadata.jsonl that names it. Malformed lines and duplicate names are errors."""
    rows: dict[str, dict] = {}
    for meta in metadata_files:
        lines = meta.read_text(encoding="utf-8-sig").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                raise ValueError(f"{meta}, line {n}: each line must be a JSON object with a \"file_name\"")
            key = _key(root, meta.parent / row["file_name"])
            if key in rows:
                raise ValueError(f"{meta}, line {n}: {row['file_name']} already has a metadata row")
            rows[key] = row
    return rows


def collate(batch: list[dict]) -> dict:
    """A DataLoader ``collate_fn`` for ImageFolder items: images stacked, everything else (captions that may be
    None, layouts of different lengths) kept as lists. Shapes: image -> (B, 3, size, size)."""
    out = {k: [item[k] for item in batch] for k in batch[0]}
    out["image"] = torch.stack(out["image"])
    return out


def _check_folder(path: str | os.PathLike) -> Path:
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder of images")
    return root


def _key(root: Path, file: Path) -> str:
    """The name metadata rows and images are matched by: the path relative to ``root``, normalised, posix."""
    return Path(os.path.normpath(os.path.relpath(file, root))).as_posix()


def _caption(image: Path, row: dict) -> str | None:
    """The metadata row's caption, else the .txt/.caption beside the image; stripped, and None when empty."""
    for column in CAPTION_COLUMNS:
        value = row.get(column)
        if value is not None:
            if not isinstance(value, str):
                raise ValueError(f"{image}: its {METADATA} {column!r} must be a string, got {value!r}")
            if value.strip():
                return value.strip()
    for ext in CAPTION_EXTENSIONS:
        side = image.with_suffix(ext)
        if side.is_file():
            try:
                return side.read_text(encoding="utf-8-sig").strip() or None
            except UnicodeDecodeError:
                raise ValueError(f"{side}: a caption file must be UTF-8 text") from None
    return None


def _reason(e: Exception, path: Path) -> str:
    """An exception's message without the path that load_image already puts in front of it."""
    return str(e).removeprefix(f"{path}: ")


def _first_names(names: list[str]) -> str:
    return ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")


def _warn_about(root: Path, total: int, reasons: dict[str, str], unmatched: list[str]) -> None:
    """One warning for everything skipped: undecodable files (first few with why) and orphan metadata rows."""
    parts = []
    if reasons:
        named = [f"{_key(root, Path(p))} ({why})" for p, why in reasons.items()]
        parts.append(f"skipped {len(reasons)} of {total} image files that could not be read: {_first_names(named)}")
    if unmatched:
        parts.append(f"{len(unmatched)} {METADATA} rows name no image found here: {_first_names(unmatched)}")
    if parts:
        warnings.warn(f"{root}: " + "; ".join(parts), stacklevel=3)

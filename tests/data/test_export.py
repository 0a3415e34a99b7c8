"""``nanoldm shapes export``: images with kohya .txt captions and a Hugging Face metadata.jsonl; bad input refused."""
import json

import numpy as np
import pytest
from PIL import Image

from nanoldm.cli.__main__ import main
from nanoldm.data.export import export_shapes
from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.vocabulary import parse_caption


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_metadata(folder):
    return [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]


def test_export_writes_images_captions_and_metadata(tmp_path):
    world = ShapesWorld(count=12, seed=5, size=64)
    export_shapes(world, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted([f"{i:05d}.{ext}" for i in range(12) for ext in ("png", "txt")] + ["metadata.jsonl"])
    rows = read_metadata(tmp_path / "out")
    for i, (row, sample) in enumerate(zip(rows, world)):
        assert row["file_name"] == f"{i:05d}.png" and row["text"] == sample.caption
        assert (tmp_path / "out" / f"{i:05d}.txt").read_text() == sample.caption
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / row["file_name"])), sample.image)
        assert row["class_label"] == sample.class_label and row["relation"] == sample.relation
        assert [l["class_id"] for l in row["layout"]] == [cid for cid, _ in sample.layout]
        assert np.allclose([l["box"] for l in row["layout"]], [box for _, box in sample.layout], atol=1e-6)
        assert [(o["colour"], o["shape"], o["size"], o["position"]) for o in row["objects"]] == \
            [(o.colour, o.shape, o.size, o.position) for o in sample.objects]
        parse_caption(row["text"])


def test_cli_export_and_refusal_of_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "data"
    code, stdout, _ = run_cli(capsys, "shapes", "export", out, "--count", 6, "--held-out", "green triangle",
                              "--objects", "1", "--seed", 3)
    assert code == 0 and "6 images" in stdout
    rows = read_metadata(out)
    assert len(rows) == 6 and all(len(r["objects"]) == 1 for r in rows)
    assert all((r["objects"][0]["colour"], r["objects"][0]["shape"]) != ("green", "triangle") for r in rows)
    before = (out / "00000.png").read_bytes()
    code, _, err = run_cli(capsys, "shapes", "export", out, "--count", 2)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err
    assert (out / "00000.png").read_bytes() == before and len(read_metadata(out)) == 6  # nothing touched
    (out / "notes.md").write_text("mine")
    code, _, _ = run_cli(capsys, "shapes", "export", out, "--count", 2, "--overwrite")
    assert code == 0 and len(read_metadata(out)) == 2
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00000.txt", "00001.png", "00001.txt",
                                                     "metadata.jsonl", "notes.md"]


@pytest.mark.parametrize("args, words", [
    (("--count", 0), "count"),
    (("--count", 3, "--held-out", "pink triangle"), "pink triangle"),
    (("--count", 3, "--held-out", "green hexagon"), "green hexagon"),
    (("--count", 3, "--size", 48), "size"),
    (("--count", 3, "--objects", "3"), "objects"),
    (("--count", 3, "--objects", "one"), "--objects"),
    (("--count", 3, "--extra-shapes", "moon"), "moon"),
    (("--count", 3, "--split", "held_out"), "held-out"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "shapes", "export", tmp_path / "out", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err
    assert not (tmp_path / "out").exists()


def test_uncaptioned_share_keeps_only_a_reference_caption(tmp_path):
    from nanoldm.data.folder import ImageFolder

    world = ShapesWorld(count=8, seed=2)
    export_shapes(world, tmp_path / "d", uncaptioned=0.25)
    rows = read_metadata(tmp_path / "d")
    for i, (row, sample) in enumerate(zip(rows, world)):
        captioned = i < 6
        assert (tmp_path / "d" / f"{i:05d}.txt").exists() == captioned
        assert row.get("text") == (sample.caption if captioned else None)
        assert row.get("reference_caption") == (None if captioned else sample.caption)
    folder = ImageFolder(tmp_path / "d")
    assert [c is None for c in folder.captions] == [False] * 6 + [True] * 2
    with pytest.raises(ValueError, match="uncaptioned share"):
        export_shapes(world, tmp_path / "e", uncaptioned=1.5)

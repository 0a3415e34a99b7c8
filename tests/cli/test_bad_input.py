"""The bad-input sweep of a new user's first hour: each case through the CLI ends in one line on stderr, exit
code 2, before any image is made, and nothing written."""
import pytest
import torch

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.model import LatentDiffusion
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()), path)
    return path


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


CASES = {
    "cfg nan": (["--cfg-scale", "nan"], "cfg scale must be a finite number, got nan"),
    "cfg inf": (["--cfg-scale", "inf"], "cfg scale must be a finite number, got inf"),
    "eta nan": (["--eta", "nan"], "eta must be a finite number"),
    "text file named .ckpt": (["--model", "{tmp}/notes.ckpt"], "not a checkpoint: neither a PyTorch zip nor a pickle"),
    "out is a file": (["--out", "{tmp}/taken.png"], "it is a file, not a folder"),
    "out under a file": (["--out", "{tmp}/taken.png/more"], "it is a file, not a folder"),
    "no such device": (["--device", "tpu0"], "unknown device 'tpu0'"),
}
if not torch.cuda.is_available():
    CASES["cuda without CUDA"] = (["--device", "cuda"], "sees no CUDA GPU")


@pytest.mark.parametrize("case", sorted(CASES))
def test_txt2img_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys, model_file):
    (tmp_path / "notes.ckpt").write_text("these are my notes, not a model\n")
    (tmp_path / "taken.png").write_bytes(b"an image I made yesterday")
    before = _files(tmp_path)
    flags, message = CASES[case]
    argv = ["txt2img", "a red circle", "--model", str(model_file), "--out", str(tmp_path / "out"), "--steps", "2"]
    code = main(argv + [f.format(tmp=tmp_path) for f in flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert _files(tmp_path) == before
    assert (tmp_path / "taken.png").read_bytes() == b"an image I made yesterday"


def test_batch_count_continues_the_seeds_and_a_grid_keeps_them(tmp_path, capsys, model_file):
    """--n-iter 2 --batch-size 2 makes seeds 5, 6, 7, 8 (A1111's Batch count), each image the one that seed gives
    alone; --grid adds one PNG of all four in A1111's layout (2 x 2) with the first image's infotext."""
    from PIL import Image
    base = ["txt2img", "a red circle", "--model", str(model_file), "--steps", "1", "--seed", "5"]
    assert main(base + ["--n-iter", "2", "--batch-size", "2", "--grid", "--out", str(tmp_path / "runs")]) == 0
    assert main(base[:-1] + ["8", "--out", str(tmp_path / "alone")]) == 0
    capsys.readouterr()
    made = sorted((tmp_path / "runs").glob("0*.png"))
    assert [p.stem.split("-")[1] for p in made] == ["5", "6", "7", "8"]
    [alone] = (tmp_path / "alone").glob("*.png")
    assert Image.open(made[-1]).tobytes() == Image.open(alone).tobytes()
    grid = Image.open(tmp_path / "runs" / "grid-0000.png")
    w, h = Image.open(made[0]).size
    assert grid.size == (2 * w, 2 * h) and grid.info["parameters"] == Image.open(made[0]).info["parameters"]
    assert grid.crop((w, h, 2 * w, 2 * h)).tobytes() == Image.open(made[3]).tobytes()
    assert main(base + ["--n-iter", "0"]) == 2 and "--n-iter must be at least 1" in capsys.readouterr().err

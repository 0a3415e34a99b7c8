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


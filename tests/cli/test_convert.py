"""`nanoldm convert` end to end, and every kind of bad input: one line on stderr, non-zero exit, nothing lost."""
import os
import subprocess
import sys

import pytest
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.model import LatentDiffusion
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()), path)
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


def test_convert_between_all_formats(tmp_path, capsys, tiny_file):
    assert run_cli(capsys, "convert", tiny_file, tmp_path / "d", "--to", "diffusers")[0] == 0
    assert run_cli(capsys, "convert", tmp_path / "d", tmp_path / "sd.safetensors", "--to", "sd")[0] == 0
    code, out, _ = run_cli(capsys, "convert", tmp_path / "sd.safetensors", tmp_path / "back.safetensors")
    assert code == 0 and "wrote nanoldm checkpoint" in out
    a, b = load_model(tiny_file).state_dict(), load_model(tmp_path / "back.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_half_precision_conversion(tmp_path, capsys, tiny_file):
    assert run_cli(capsys, "convert", tiny_file, tmp_path / "h.safetensors", "--half")[0] == 0
    assert load_model(tmp_path / "h.safetensors", dtype=None).unet.conv_in.weight.dtype == torch.float16
    assert (tmp_path / "h.safetensors").stat().st_size < tiny_file.stat().st_size * 0.6


def test_missing_path(tmp_path, capsys):
    assert_one_line_error(*run_cli(capsys, "convert", tmp_path / "nope.safetensors", tmp_path / "x.safetensors")[::2],
                          "nope.safetensors", "no such file")


def test_truncated_safetensors(tmp_path, capsys, tiny_file):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    assert_one_line_error(*run_cli(capsys, "convert", bad, tmp_path / "x.safetensors")[::2], "cut.safetensors",
                          "truncated or corrupt")


def test_garbage_file(tmp_path, capsys):
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(os.urandom(1000))
    assert_one_line_error(*run_cli(capsys, "convert", bad, tmp_path / "x.safetensors")[::2], "junk.safetensors")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_ckpt_with_code_in_its_pickle_is_refused_not_run(tmp_path, capsys):
    exploit = _Exploit()
    exploit.marker = tmp_path / "pwned"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": exploit}, tmp_path / "evil.ckpt")
    code, _, err = run_cli(capsys, "convert", tmp_path / "evil.ckpt", tmp_path / "x.safetensors")
    assert_one_line_error(code, err, "evil.ckpt", "refused")
    assert not exploit.marker.exists()


def test_checkpoint_of_another_architecture_names_the_differences(tmp_path, capsys, tiny_file):
    from nanoldm.checkpoint.formats import read_tensors, write_safetensors
    tensors, meta = read_tensors(tiny_file)
    tensors["unet.conv_in.weight"] = torch.zeros(32, 9, 3, 3)  # an inpainting UNet's first conv
    del tensors["vae.decoder.conv_out.bias"]
    tensors["unet.extra.weight"] = torch.zeros(1)
    write_safetensors(tmp_path / "other.safetensors", tensors, meta)
    code, _, err = run_cli(capsys, "convert", tmp_path / "other.safetensors", tmp_path / "x.safetensors")
    assert_one_line_error(code, err, "not a checkpoint of this architecture", "1 missing keys (vae.decoder.conv_out.bias)",
                          "1 unexpected keys (unet.extra.weight)",
                          "unet.conv_in.weight is (32, 9, 3, 3) in the file but (32, 4, 3, 3) in the model")


def test_not_a_stable_diffusion_file(tmp_path, capsys):
    from nanoldm.checkpoint.formats import write_safetensors
    write_safetensors(tmp_path / "lora.safetensors", {"lora_unet_down.alpha": torch.ones(1)})
    assert_one_line_error(*run_cli(capsys, "convert", tmp_path / "lora.safetensors", tmp_path / "x.safetensors")[::2],
                          "lora.safetensors", "not a Stable Diffusion 1.x checkpoint")


def test_tokenizer_folder_without_merges(tmp_path, capsys, tiny_file):
    assert run_cli(capsys, "convert", tiny_file, tmp_path / "d", "--to", "diffusers")[0] == 0
    (tmp_path / "d" / "tokenizer" / "merges.txt").unlink()
    assert_one_line_error(*run_cli(capsys, "convert", tmp_path / "d", tmp_path / "x.safetensors")[::2],
                          "tokenizer", "no merges.txt")


def test_diffusers_folder_missing_a_part(tmp_path, capsys, tiny_file):
    assert run_cli(capsys, "convert", tiny_file, tmp_path / "d", "--to", "diffusers")[0] == 0
    (tmp_path / "d" / "vae" / "config.json").unlink()
    assert_one_line_error(*run_cli(capsys, "convert", tmp_path / "d", tmp_path / "x.safetensors")[::2],
                          "missing vae/config.json")


def test_existing_destination_is_kept(tmp_path, capsys, tiny_file):
    dst = tmp_path / "keep.safetensors"
    dst.write_bytes(b"precious")
    assert_one_line_error(*run_cli(capsys, "convert", tiny_file, dst)[::2], "already exists", "--overwrite")
    assert dst.read_bytes() == b"precious"
    assert run_cli(capsys, "convert", tiny_file, dst, "--overwrite")[0] == 0
    assert load_model(dst).config == TINY


def test_we_never_write_pickles(tmp_path, capsys, tiny_file):
    assert_one_line_error(*run_cli(capsys, "convert", tiny_file, tmp_path / "x.ckpt", "--to", "sd")[::2],
                          ".safetensors")


def test_python_dash_m_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nanoldm", "convert", str(tmp_path / "missing"), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("nanoldm convert: error:") and "no such file" in proc.stderr


def test_convert_keeps_the_dtype_unless_told(tmp_path, capsys, tiny_file):
    half = tmp_path / "half.safetensors"
    assert run_cli(capsys, "convert", tiny_file, half, "--half")[0] == 0
    for dst, flags, dtype in ((tmp_path / "kept.safetensors", [], torch.float16),
                              (tmp_path / "full.safetensors", ["--float"], torch.float32)):
        code, out, _ = run_cli(capsys, "convert", half, dst, *flags)
        assert code == 0 and str(dtype).removeprefix("torch.") in out
        assert {t.dtype for t in load_model(dst, dtype=None).state_dict().values()} == {dtype}


def test_convert_makes_folders_with_the_usual_permissions(tmp_path, capsys, tiny_file):
    umask = os.umask(0o022)
    try:
        assert run_cli(capsys, "convert", tiny_file, tmp_path / "d", "--to", "diffusers")[0] == 0
    finally:
        os.umask(umask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_convert_into_a_path_under_a_file(tmp_path, capsys, tiny_file):
    (tmp_path / "f").write_text("x")
    for dst in ("f/d", "f/m.safetensors"):
        code, _, err = run_cli(capsys, "convert", tiny_file, tmp_path / dst)
        assert_one_line_error(code, err, "it is a file, not a folder")
        assert ".tmp" not in err and "/." not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]

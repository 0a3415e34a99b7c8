"""``nanoldm train lora``: an interrupted run resumed writes the same file, bit for bit, as one never stopped;
kohya's flag names are aliases; bad options are one line, exit 2, and nothing is written."""
import pytest
import torch

from nanoldm.checkpoint.formats import read_tensors
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.finetune.lora_file import read_lora
from nanoldm.training import lora


@pytest.fixture
def base(tiny_model_16px, tmp_path):
    path = tmp_path / "base.safetensors"
    save_model(tiny_model_16px, path)
    return path


def command(base, out, *extra):
    return ["train", "lora", "--model", str(base), "--data", "shapes", "--count", "8", "--size", "16",
            "--network-dim", "2", "--network-alpha", "1", "--conv-dim", "2", "--rank-dropout", "0.25",
            "--batch-size", "2", "--lr", "1e-2", "--warmup-steps", "0", "--device", "cpu", "--out", str(out),
            "--name", "mine", *extra]


def test_resumed_run_writes_the_same_file(base, tmp_path, monkeypatch):
    monkeypatch.setattr(lora, "now", lambda: 1_700_000_000.0)  # the start and end times the file records
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(command(base, whole, "--steps", "3")) == 0
    assert main(command(base, cut, "--steps", "1")) == 0  # builds its latent cache, as the whole run did
    assert main(command(base, cut, "--steps", "3", "--resume")) == 0  # reads it back
    # every tensor bit for bit and the same metadata (safetensors orders the header's metadata by a hash map, so
    # two writes of one file may differ in that order)
    (a, meta_a), (b, meta_b) = (read_tensors(run / "mine.safetensors") for run in (whole, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and meta_a == meta_b
    weights, meta = read_lora(cut / "mine.safetensors", load_model(base).config)
    assert meta["ss_steps"] == "3" and meta["ss_network_dim"] == "2" and meta["ss_network_alpha"] == "1.0"
    assert meta["ss_network_args"] == '{"conv_dim": "2", "conv_alpha": "2", "rank_dropout": "0.25"}'
    assert meta["ss_sd_model_name"] == "base.safetensors" and len(meta["ss_sd_model_hash"]) == 8
    assert any(".resnets." in p for p in weights) and not any(p.startswith("text_encoder.") for p in weights)


@pytest.mark.parametrize("flags, message", [
    (["--rank", "0"], "the LoRA rank must be a whole number >= 1, got 0"),
    (["--targets", "unet,vae"], "unknown LoRA target 'vae'; choose from unet, text"),
    (["--alpha", "nan"], "the LoRA alpha must be a finite number >= 0, got nan"),
    (["--conv-alpha", "-1", "--conv-rank", "2"], "the LoRA conv alpha must be a finite number >= 0, got -1.0"),
])
def test_bad_options_are_one_line_and_write_nothing(base, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    argv = ["train", "lora", "--model", str(base), "--data", "shapes", "--out", str(out), "--steps", "1", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"nanoldm train: error: {message}\n"
    assert not out.exists()

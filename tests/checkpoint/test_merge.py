"""Checkpoint merging: weighted sum at alpha 0 / 1 is A / B bitwise, add difference with B = M is A, a baked LoRA
equals the LoRA applied at run time, any format in and out, and bad input refused before anything is written."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from nanoldm.checkpoint.formats import CheckpointError, read_metadata, write_safetensors_streamed
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.merge import RECIPE_KEY, MergeRecipe, merge_checkpoints
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.finetune.lora import ActiveLora, LoraStack
from nanoldm.finetune.lora_file import read_lora, save_lora
from nanoldm.model import LatentDiffusion
from tests.conftest import TINY
from tests.finetune.test_lora_parity import TEXT_ATTENTION, random_lora

LORA_LAYERS = ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", "unet.down_blocks.0.resnets.1.conv1",
               "unet.up_blocks.0.resnets.0.conv_shortcut") + TEXT_ATTENTION


@pytest.fixture
def models(tmp_path, tokenizer):
    paths = []
    for seed, name in enumerate("ABM"):
        torch.manual_seed(seed)
        model = LatentDiffusion.from_config(TINY, tokenizer=tokenizer)
        save_model(model, tmp_path / f"{name}.safetensors")
        paths.append(tmp_path / f"{name}.safetensors")
    return paths


def weights(path):
    return load_model(path, dtype=None).state_dict()


def assert_equal(got, want):
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_streamed_writer_is_a_safetensors_file(tmp_path):
    tensors = {"b": torch.randn(3, 4), "a": torch.arange(5), "h": torch.randn(2).half(), "s": torch.tensor(2.0)}
    specs = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    write_safetensors_streamed(tmp_path / "x.safetensors", specs, iter(tensors.items()), {"k": "v"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert_equal(back, tensors)
    assert read_metadata(tmp_path / "x.safetensors") == {"k": "v"}


def test_weighted_sum_ends_are_a_and_b_bitwise(models, tmp_path):
    a, b, _ = models
    merge_checkpoints(a, tmp_path / "0.safetensors", MergeRecipe(alpha=0.0), b=b)
    merge_checkpoints(a, tmp_path / "1.safetensors", MergeRecipe(alpha=1.0), b=b)
    assert_equal(weights(tmp_path / "0.safetensors"), weights(a))
    assert_equal(weights(tmp_path / "1.safetensors"), weights(b))
    merge_checkpoints(a, tmp_path / "m.safetensors", MergeRecipe(alpha=0.3), b=b)
    wa, wb, got = weights(a), weights(b), weights(tmp_path / "m.safetensors")
    for k in wa:
        torch.testing.assert_close(got[k], wa[k] * 0.7 + wb[k] * 0.3, rtol=0, atol=1e-6)
    recipe = json.loads(read_metadata(tmp_path / "m.safetensors")[RECIPE_KEY])
    assert (recipe["interp_method"], recipe["multiplier"], recipe["primary_model"], recipe["secondary_model"]) == (
        "Weighted sum", 0.3, "A.safetensors", "B.safetensors")


def test_add_difference(models, tmp_path):
    a, b, m = models
    merge_checkpoints(a, tmp_path / "same.safetensors", MergeRecipe("add-difference", 0.8), b=m, base=m)
    assert_equal(weights(tmp_path / "same.safetensors"), weights(a))
    merge_checkpoints(a, tmp_path / "d.safetensors", MergeRecipe("add-difference", 0.5), b=b, base=m)
    wa, wb, wm, got = weights(a), weights(b), weights(m), weights(tmp_path / "d.safetensors")
    for k in wa:
        torch.testing.assert_close(got[k], wa[k] + (wb[k] - wm[k]) * 0.5, rtol=0, atol=1e-6)


def test_any_format_in_and_out(models, tmp_path):
    a, b, _ = models
    save_model(load_model(a), tmp_path / "a-sd.safetensors", format="sd")
    save_model(load_model(b), tmp_path / "b-diffusers", format="diffusers")
    merge_checkpoints(a, tmp_path / "ours.safetensors", MergeRecipe(alpha=0.25), b=b)
    merge_checkpoints(tmp_path / "a-sd.safetensors", tmp_path / "out", MergeRecipe(alpha=0.25),
                      b=tmp_path / "b-diffusers", format="diffusers")
    merge_checkpoints(tmp_path / "b-diffusers", tmp_path / "sd.safetensors", MergeRecipe(alpha=0.75),
                      b=tmp_path / "a-sd.safetensors", format="sd")
    want = weights(tmp_path / "ours.safetensors")
    assert_equal(weights(tmp_path / "out"), want)
    got = weights(tmp_path / "sd.safetensors")
    assert all((got[k] - want[k]).abs().max() <= 1e-6 for k in want)  # 0.25 A + 0.75 B, summed the other way
    assert "model.diffusion_model.input_blocks.0.0.weight" in load_file(str(tmp_path / "sd.safetensors"))


def test_baked_lora_equals_the_lora_at_run_time(models, tmp_path):
    a, _, _ = models
    model = load_model(a)
    save_lora(tmp_path / "l.safetensors", random_lora(model, LORA_LAYERS, alpha=1.0))
    merge_checkpoints(a, tmp_path / "baked.safetensors", MergeRecipe(method=None, loras=((tmp_path / "l.safetensors",
                                                                                        0.7),)))
    LoraStack(model.modules()).apply([ActiveLora("l", read_lora(tmp_path / "l.safetensors", TINY)[0], 0.7, 0.7)])
    got, want = weights(tmp_path / "baked.safetensors"), model.state_dict()
    assert max((got[k] - want[k]).abs().max().item() for k in want) <= 1e-5
    assert sum(not torch.equal(got[k], v) for k, v in weights(a).items()) == len(LORA_LAYERS)


def test_bad_input_writes_nothing(models, tmp_path, tokenizer, capsys):
    a, b, _ = models
    other = LatentDiffusion.from_config(dataclasses.replace(TINY, text=dataclasses.replace(TINY.text, layers=3)),
                                        tokenizer=tokenizer)
    save_model(other, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="other.safetensors: not a checkpoint of this architecture: 16 unexpected"):
        merge_checkpoints(a, tmp_path / "c.safetensors", MergeRecipe(), b=tmp_path / "other.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    out = str(tmp_path / "c.safetensors")
    assert main(["merge", str(a), str(tmp_path / "notes.txt"), "--out", out]) == 2
    assert "notes.txt: unknown checkpoint type '.txt'" in capsys.readouterr().err
    assert main(["merge", str(a), str(b), "--out", out, "--alpha", "nan"]) == 2
    assert "alpha must be a finite number, got nan" in capsys.readouterr().err
    assert main(["merge", str(a), "--lora", f"{tmp_path / 'l.safetensors'}:nan", "--out", out]) == 2
    assert "must be a finite number" in capsys.readouterr().err
    assert main(["merge", str(a), str(b), "--method", "add-difference", "--out", out]) == 2
    assert "add-difference needs a model --base M" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()
    assert main(["merge", str(a), str(b), "--out", out, "--alpha", "0.5"]) == 0
    assert main(["merge", str(a), str(b), "--out", out]) == 2  # exists: not overwritten
    assert "already exists" in capsys.readouterr().err

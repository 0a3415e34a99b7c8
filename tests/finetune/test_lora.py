"""Applying LoRAs: merged and restored bitwise, weight 0 is no LoRA, separate text-encoder / UNet weights, several
at once, prompt tags with --lora-dir, A1111's "Lora hashes", and misfits refused with the model unchanged."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from nanoldm.cli.__main__ import main
from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.save import save_model
from nanoldm.finetune.lora import ActiveLora, LoraStack
from nanoldm.finetune.lora_file import LoraError, LoraModule, save_lora
from nanoldm.finetune.lora_library import LoraNotFoundWarning, parse_lora_args
from nanoldm.pipelines.infotext import parse_infotext, read_png_infotext
from nanoldm.pipelines.pipeline import Pipeline
from tests.finetune.test_lora_parity import TEXT_ATTENTION, TEXT_MLP, random_lora

GEN = dict(steps=2, seed=3, width=16, height=16, cfg_scale=5.0, progress=False)
UNET = ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", "unet.down_blocks.0.attentions.0.proj_out",
        "unet.down_blocks.1.resnets.0.conv2", "unet.conv_out")


@pytest.fixture
def model(tiny_model_16px):
    return tiny_model_16px.eval()


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_bitwise(model, before):
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_apply_then_remove_is_bitwise_and_weight_zero_is_no_lora(model):
    before = state(model)
    a = random_lora(model, UNET + TEXT_MLP)
    b = random_lora(model, UNET[:2] + TEXT_ATTENTION, rank=3, alpha=None)
    stack = LoraStack(model.modules())
    stack.apply([ActiveLora("a", a), ActiveLora("b", b, te=0.5, unet=-1.0)])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) == len(set(UNET + TEXT_MLP + TEXT_ATTENTION))
    stack.apply([ActiveLora("a", a, unet=0.3)])  # a weight change: from the originals, not on top
    one = state(model)
    stack.restore()
    assert_bitwise(model, before)
    stack.apply([ActiveLora("a", a, unet=0.3)])
    assert_bitwise(model, one)
    stack.apply([ActiveLora("a", a, te=0.0, unet=0.0)])
    assert_bitwise(model, before)


def test_merged_weight_is_w_plus_scale_up_down(model):
    (path, m), = random_lora(model, UNET[:1], alpha=1.0).items()
    w = model.unet.get_submodule(path.removeprefix("unet.")).weight.detach().clone()
    LoraStack(model.modules()).apply([ActiveLora("a", {path: m}, unet=0.7)])
    expected = w + 0.7 * (1.0 / 2) * m.up @ m.down
    torch.testing.assert_close(model.unet.get_submodule(path.removeprefix("unet.")).weight, expected)


def test_a_misfit_names_the_layer_and_changes_nothing(model):
    before = state(model)
    stack = LoraStack(model.modules())
    good = random_lora(model, UNET)
    bad = {**good, "unet.down_blocks.0.attentions.0.proj_in": LoraModule(torch.randn(2, 7), torch.randn(5, 2))}
    with pytest.raises(LoraError, match=r"'unet.down_blocks.0.attentions.0.proj_in' adds a \(5, 7\) product"):
        stack.apply([ActiveLora("bad", bad)])
    with pytest.raises(LoraError, match="'unet.nowhere.to_q' is not a layer of this model"):
        stack.apply([ActiveLora("bad", {**good, "unet.nowhere.to_q": good[UNET[0]]})])
    assert_bitwise(model, before)


def test_tags_equal_loading_and_record_lora_hashes(model, tmp_path):
    folder = tmp_path / "loras"
    save_lora(folder / "sub" / "ink.safetensors", random_lora(model, UNET + TEXT_MLP), {"ss_network_dim": "2"})
    save_lora(folder / "paper.safetensors", random_lora(model, UNET[1:]), format="diffusers")
    before = state(model)
    pipe = Pipeline(model, lora_dir=folder)
    plain = pixels(pipe.txt2img("a red circle", **GEN))
    tagged = pipe.txt2img("a red circle <lora:ink:0.6:0.9> <lora:paper:0.5>", **GEN)
    assert np.abs(pixels(tagged).astype(int) - plain).max() > 10
    data = (folder / "sub" / "ink.safetensors").read_bytes()
    ink = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]
    params = parse_infotext(tagged[0].info["parameters"])
    assert params["Prompt"] == "a red circle <lora:ink:0.6:0.9> <lora:paper:0.5>"
    assert params["Lora hashes"].startswith(f"ink: {ink}, paper: ")
    assert '"ink: ' in tagged[0].info["parameters"]  # quoted as A1111 writes it

    pipe.loras.stack.restore()  # the tags stay merged until another set is asked for; this model serves two pipelines
    assert_bitwise(model, before)
    explicit = Pipeline(model)
    explicit.load_lora(folder / "sub" / "ink.safetensors", 0.9, te_weight=0.6)
    explicit.load_lora(folder / "paper.safetensors", 0.5)
    assert np.array_equal(pixels(explicit.txt2img("a red circle  ", **GEN)), pixels(tagged))
    explicit.unload_loras()
    assert_bitwise(model, before)
    assert np.array_equal(pixels(pipe.txt2img("a red circle <lora:ink:0>", **GEN)), plain)
    assert "Lora hashes" in parse_infotext(pipe.txt2img("a red circle <lora:ink:0>", **GEN)[0].info["parameters"])


def test_missing_lora_warns_and_goes_on(model):
    pipe = Pipeline(model)
    plain = pixels(pipe.txt2img("a red circle", **GEN))
    with pytest.warns(LoraNotFoundWarning, match="Lora not found: missing"):
        images = pipe.txt2img("a red circle<lora:missing:1>", **GEN)
    assert np.array_equal(pixels(images), plain)
    assert "Lora hashes" not in images[0].info["parameters"]


def test_tag_arguments_and_bad_weights():
    assert parse_lora_args("a", ()) == (1.0, 1.0)
    assert parse_lora_args("a", ("0.5",)) == (0.5, 0.5)
    assert parse_lora_args("a", ("0.5", "0.2")) == (0.5, 0.2)
    assert parse_lora_args("a", ("0.5", "unet=0.1", "dyn=4")) == (0.5, 0.1)
    with pytest.raises(ValueError, match="LoRA 'a': weight must be finite, got 'nan'"):
        parse_lora_args("a", ("nan",))
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_lora_args("a", ("1", "x"))


def test_cli_lora_dir_and_bad_input(model, tmp_path, capsys):
    save_model(model, tmp_path / "m.safetensors")
    save_lora(tmp_path / "loras" / "ink.safetensors", random_lora(model, UNET))
    args = ["txt2img", "--model", str(tmp_path / "m.safetensors"), "--steps", "2", "--width", "16", "--height", "16",
            "--lora-dir", str(tmp_path / "loras"), "--out", str(tmp_path / "out")]
    assert main([*args[:1], "a circle <lora:ink:0.5> <lora:missing:1>", *args[1:]]) == 0
    err = capsys.readouterr().err
    assert "Lora not found: missing" in err
    png, = (tmp_path / "out").glob("*.png")
    assert "Lora hashes: \"ink: " in read_png_infotext(png)
    assert main([*args[:1], "a circle <lora:ink:nan>", *args[1:]]) == 2
    assert capsys.readouterr().err.strip().endswith("LoRA 'ink': weight must be finite, got 'nan'")
    data = (tmp_path / "loras" / "ink.safetensors").read_bytes()
    (tmp_path / "loras" / "cut.safetensors").write_bytes(data[:-50])
    assert main([*args[:1], "a circle <lora:cut:1>", *args[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.safetensors: truncated or corrupt" in err and "\n" not in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1  # nothing written by the failed runs
    save_lora(tmp_path / "loras" / "xl.safetensors", random_lora(model, UNET), {"ss_base_model_version": "sdxl_base_v1-0"})
    assert main([*args[:1], "a circle <lora:xl:1>", *args[1:]]) == 2
    assert "a LoRA for SDXL models" in capsys.readouterr().err


def test_truncated_file_is_a_checkpoint_error(model, tmp_path):
    save_lora(tmp_path / "a.safetensors", random_lora(model, UNET))
    (tmp_path / "a.safetensors").write_bytes((tmp_path / "a.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="a.safetensors: "):
        Pipeline(model).load_lora(tmp_path / "a.safetensors")

"""LoRA files: every layout reads into our module paths; kohya's and diffusers' layouts written and read back."""
from __future__ import annotations

import pytest
import torch

from nanoldm.checkpoint import keymap_lora as km
from nanoldm.checkpoint.formats import CheckpointError, write_safetensors
from nanoldm.config import SD_V1
from nanoldm.finetune.lora_file import LoraError, LoraModule, lora_delta, read_lora, save_lora
from tests.conftest import TINY

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
PROJ_IN = "unet.down_blocks.0.attentions.0.proj_in"
CONV = "unet.down_blocks.0.resnets.0.conv1"
TE_Q = "text_encoder.encoder.layers.0.self_attn.q_proj"


def _weights(rank: int = 2) -> dict[str, LoraModule]:
    w = TINY.unet.model_channels
    t = TINY.text.width
    return {
        Q: LoraModule(torch.randn(rank, w), torch.randn(w, rank), alpha=1.0),
        PROJ_IN: LoraModule(torch.randn(rank, w, 1, 1), torch.randn(w, rank, 1, 1), alpha=None),
        CONV: LoraModule(torch.randn(rank, w, 3, 3), torch.randn(w, rank, 1, 1), alpha=4.0),
        TE_Q: LoraModule(torch.randn(rank, t), torch.randn(t, rank), alpha=0.5),
    }


def test_kohya_names():
    assert km.ours_to_kohya(Q) == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert km.ours_to_kohya(TE_Q) == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    table = km.kohya_table(SD_V1)
    assert table["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"] == Q
    assert table["lora_unet_output_blocks_11_1_proj_out"] == "unet.up_blocks.3.attentions.2.proj_out"
    assert table["lora_unet_middle_block_1_transformer_blocks_0_ff_net_2"] == \
        "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2"


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_round_trip(tmp_path, fmt):
    weights = _weights()
    save_lora(tmp_path / "l.safetensors", weights, {"ss_network_dim": "2"}, format=fmt)
    back, meta = read_lora(tmp_path / "l.safetensors", TINY)
    assert meta == {"ss_network_dim": "2"} and set(back) == set(weights)
    for name, m in weights.items():
        assert torch.equal(back[name].down, m.down)
        shape = (m.up.shape[0], *m.down.shape[1:])
        torch.testing.assert_close(lora_delta(back[name], shape), lora_delta(m, shape), rtol=0, atol=1e-6)
        if fmt == "kohya":
            assert torch.equal(back[name].up, m.up) and back[name].alpha == m.alpha


def test_compvis_and_old_diffusers_spellings(tmp_path):
    down, up = torch.randn(2, 320), torch.randn(320, 2)
    write_safetensors(tmp_path / "a.safetensors", {
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight": down,
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight": up,
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(1.0)})
    (w, _), = [read_lora(tmp_path / "a.safetensors")]
    assert set(w) == {Q} and w[Q].alpha == 1.0
    write_safetensors(tmp_path / "b.safetensors", {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight": down,
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight": up,
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight": torch.randn(2, 768),
        "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight": torch.randn(768, 2)})
    w, _ = read_lora(tmp_path / "b.safetensors")
    assert set(w) == {Q.replace("to_q", "to_out.0"), TE_Q}


def _write_one(path, name, down, up, metadata=None):
    write_safetensors(path, {name + ".lora_down.weight": down, name + ".lora_up.weight": up}, metadata)


def test_other_families_are_named(tmp_path):
    _write_one(tmp_path / "xl.safetensors", "lora_te2_text_model_encoder_layers_0_mlp_fc1",
               torch.randn(2, 1280), torch.randn(5120, 2))
    with pytest.raises(LoraError, match="for SDXL models"):
        read_lora(tmp_path / "xl.safetensors")
    _write_one(tmp_path / "v2.safetensors", "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
               torch.randn(2, 1024), torch.randn(320, 2))
    with pytest.raises(LoraError, match="for SD 2.x models"):
        read_lora(tmp_path / "v2.safetensors")
    _write_one(tmp_path / "m.safetensors", "lora_unet_conv_in", torch.randn(2, 4, 3, 3), torch.randn(320, 2, 1, 1),
               {"ss_base_model_version": "sdxl_base_v1-0"})
    with pytest.raises(LoraError, match="for SDXL models"):
        read_lora(tmp_path / "m.safetensors")


def test_bad_files_name_the_first_bad_key(tmp_path):
    _write_one(tmp_path / "n.safetensors", "lora_unet_down_blocks_9_nothing", torch.randn(2, 4), torch.randn(4, 2))
    with pytest.raises(LoraError, match="lora_unet_down_blocks_9_nothing.lora_down.weight' names no layer"):
        read_lora(tmp_path / "n.safetensors")
    write_safetensors(tmp_path / "s.safetensors", {"lora_unet_conv_in.lora_down.weight": torch.randn(2, 4, 3, 3)})
    with pytest.raises(LoraError, match="'lora_unet_conv_in' has no up factor"):
        read_lora(tmp_path / "s.safetensors")
    save_lora(tmp_path / "t.safetensors", _weights())
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_lora(tmp_path / "t.safetensors", TINY)

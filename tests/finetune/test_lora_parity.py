"""LoRA parity with diffusers: a kohya file and a PEFT file give diffusers' ``load_lora_weights`` and nanoldm the
same UNet and text-encoder outputs (<= 1e-4); a PEFT file diffusers itself writes reads here the same."""
from __future__ import annotations

import pytest
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.finetune.lora import ActiveLora, LoraStack
from nanoldm.finetune.lora_file import LoraModule, read_lora, save_lora
from tests.conftest import TINY
from tests.reference import write_reference_folder

pytest.importorskip("peft")  # test-only: diffusers' LoRA loading needs it
from peft.utils import get_peft_model_state_dict  # noqa: E402

UNET_LAYERS = ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
               "unet.down_blocks.0.attentions.0.proj_in",  # 1x1 conv
               "unet.down_blocks.0.resnets.0.conv1",  # LoCon 3x3 conv
               "unet.up_blocks.1.resnets.2.conv_shortcut",
               "unet.mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj")
TEXT_MLP = ("text_encoder.encoder.layers.0.mlp.fc1", "text_encoder.encoder.layers.1.mlp.fc2")
# diffusers 0.42 turns kohya's text self-attention names into its pre-PEFT spelling and then drops them (transformers
# 5 reports them UNEXPECTED), so the kohya check covers the text MLP; the PEFT check covers the self-attention too.
TEXT_ATTENTION = ("text_encoder.encoder.layers.0.self_attn.q_proj", "text_encoder.encoder.layers.1.self_attn.out_proj")


def random_lora(model, paths, rank: int = 2, alpha: float | None = 1.0) -> dict[str, LoraModule]:
    out = {}
    for path in paths:
        part, _, rest = path.partition(".")
        w = getattr(model, part).get_submodule(rest).weight
        kernel = tuple(w.shape[2:])
        down = torch.randn(rank, w.shape[1], *kernel) * 0.5
        up = torch.randn(w.shape[0], rank, *((1, 1) if kernel else ())) * 0.5
        out[path] = LoraModule(down, up, alpha)
    return out


def outputs(unet, text, diffusers: bool):
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 5, TINY.unet.context_dim, generator=g)
    ids = torch.randint(0, TINY.text.vocab_size, (2, 77), generator=g)
    with torch.no_grad():
        eps = unet(x, torch.tensor([3, 700]), ctx)
        hidden = text(ids)
    return (eps.sample, hidden.last_hidden_state) if diffusers else (eps, hidden)


def assert_parity(model, pipe):
    ours = outputs(model.unet, model.text_encoder, diffusers=False)
    theirs = outputs(pipe.unet, pipe.text_encoder, diffusers=True)
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() <= 1e-4


@pytest.fixture
def reference(tmp_path):
    pipe = write_reference_folder(TINY, tmp_path / "ref")
    return pipe, load_model(tmp_path / "ref")


def test_kohya_file_matches_diffusers(reference, tmp_path):
    pipe, model = reference
    base = outputs(model.unet, model.text_encoder, diffusers=False)
    weights = random_lora(model, UNET_LAYERS + TEXT_MLP)
    save_lora(tmp_path / "k.safetensors", weights)
    pipe.load_lora_weights(str(tmp_path), weight_name="k.safetensors")
    stack = LoraStack(model.modules())
    stack.apply([ActiveLora("k", read_lora(tmp_path / "k.safetensors", TINY)[0])])
    assert_parity(model, pipe)
    for a, b in zip(outputs(model.unet, model.text_encoder, diffusers=False), base):
        assert (a - b).abs().max() > 1e-3  # the LoRA changes both networks


def test_peft_layout_both_ways(reference, tmp_path):
    pipe, model = reference
    weights = random_lora(model, UNET_LAYERS + TEXT_MLP + TEXT_ATTENTION, alpha=3.0)
    save_lora(tmp_path / "p.safetensors", weights, format="diffusers")
    pipe.load_lora_weights(str(tmp_path), weight_name="p.safetensors")
    stack = LoraStack(model.modules())
    stack.apply([ActiveLora("p", read_lora(tmp_path / "p.safetensors", TINY)[0])])
    assert_parity(model, pipe)

    # diffusers writes the layers it loaded; we read its file back into the same outputs
    type(pipe).save_lora_weights(tmp_path / "theirs", unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name="default_0"),
                                 text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder, adapter_name="default_0"))
    stack.restore()
    theirs, _ = read_lora(tmp_path / "theirs" / "pytorch_lora_weights.safetensors", TINY)
    assert set(theirs) == set(weights)
    stack.apply([ActiveLora("theirs", theirs)])
    assert_parity(model, pipe)

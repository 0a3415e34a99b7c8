"""The files of parts trained alone (VAE, CLIP, condition module): bitwise round trips, and a clear error for a
file of another kind."""
from dataclasses import replace

import pytest
import torch

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.parts import (is_vae_file, load_clip, load_condition, load_vae, save_clip, save_condition,
                                      save_vae)
from nanoldm.conditioning import ClassEmbedding, LayoutEncoder
from nanoldm.config import AutoencoderConfig, TextEncoderConfig
from nanoldm.text.clip_model import CLIP, CLIPConfig

TINY_VAE = AutoencoderConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
TINY_CLIP = CLIPConfig(text=TextEncoderConfig(width=32, layers=1, heads=2, mlp_dim=64), embed_dim=32,
                       image_channels=(8, 16, 16))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_vae_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(replace(TINY_VAE, scale_factor=0.123456789))
    save_vae(tmp_path / "vae.safetensors", vae)
    back = load_vae(tmp_path / "vae.safetensors")
    assert back.cfg == vae.cfg and back.cfg.scale_factor == 0.123456789 and not back.training
    assert_same_weights(vae, back)
    assert is_vae_file(tmp_path / "vae.safetensors")


def test_clip_round_trip(tmp_path):
    model = CLIP(TINY_CLIP)
    save_clip(tmp_path / "clip.safetensors", model)
    loaded = load_clip(tmp_path / "clip.safetensors")
    assert loaded.cfg == TINY_CLIP and not loaded.training
    assert_same_weights(model, loaded)


@pytest.mark.parametrize("module", [ClassEmbedding(30, 16), LayoutEncoder(30, 16, 2, 4)], ids=["class", "layout"])
def test_condition_round_trip(module, tmp_path):
    save_condition(tmp_path / "condition.safetensors", module)
    back = load_condition(tmp_path / "condition.safetensors")
    assert type(back) is type(module) and back.num_classes == 30 and back.context_dim == 16
    assert_same_weights(module, back)


def test_each_loader_refuses_the_other_files(tmp_path):
    save_clip(tmp_path / "clip.safetensors", CLIP(TINY_CLIP))
    save_condition(tmp_path / "condition.safetensors", ClassEmbedding(30, 16))
    with pytest.raises(CheckpointError, match="not an autoencoder"):
        load_vae(tmp_path / "clip.safetensors")
    with pytest.raises(CheckpointError, match="not a CLIP"):
        load_clip(tmp_path / "condition.safetensors")
    with pytest.raises(CheckpointError, match="not a condition module"):
        load_condition(tmp_path / "clip.safetensors")
    with pytest.raises(FileNotFoundError, match="no such CLIP file"):
        load_clip(tmp_path / "missing.safetensors")
    assert not is_vae_file(tmp_path / "clip.safetensors") and not is_vae_file(tmp_path / "missing.safetensors")

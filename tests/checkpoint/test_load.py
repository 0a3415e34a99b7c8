"""Loading real-format checkpoints: a diffusers folder written by diffusers itself, and the SD single file
converted from it, give our modules the same outputs as the reference models (max abs diff <= 1e-4)."""

import pytest
import torch

from nanoldm.checkpoint.formats import write_safetensors
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.config import ModelConfig
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY, TINY_TEXT, TINY_UNET_INPAINT, TINY_UNET_LINEAR, TINY_VAE

import diffusers

from tests.reference import write_reference_folder

CONFIGS = {
    "conv-proj": TINY,
    "linear-proj": ModelConfig(unet=TINY_UNET_LINEAR, vae=TINY_VAE, text=TINY_TEXT, image_size=32),
    "inpaint-9ch": ModelConfig(unet=TINY_UNET_INPAINT, vae=TINY_VAE, text=TINY_TEXT, image_size=32),
}




def assert_same_outputs(model, pipe, cfg: ModelConfig):
    x = torch.randn(2, cfg.unet.in_channels, 8, 8)
    ctx = torch.randn(2, 5, cfg.unet.context_dim)
    img = torch.rand(2, 3, 16, 16) * 2 - 1
    ids = torch.randint(0, cfg.text.vocab_size, (2, 77))
    with torch.no_grad():
        assert (model.unet(x, torch.tensor([1, 900]), ctx) - pipe.unet(x, torch.tensor([1, 900]), ctx).sample).abs().max() <= 1e-4
        assert (model.vae.encode(img).mean - pipe.vae.encode(img).latent_dist.mean).abs().max() <= 1e-4
        z = torch.randn(2, cfg.vae.z_channels, 4, 4)
        assert (model.vae.decode(z) - pipe.vae.decode(z).sample).abs().max() <= 1e-4
        out = pipe.text_encoder(ids, output_hidden_states=True)
        assert (model.text_encoder(ids) - out.last_hidden_state).abs().max() <= 1e-4
        assert (model.text_encoder(ids, clip_skip=2, final_norm=False) - out.hidden_states[-2]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_diffusers_folder_and_sd_file_match_the_reference(tmp_path, name):
    cfg = CONFIGS[name]
    pipe = write_reference_folder(cfg, tmp_path / "ref")
    model = load_model(tmp_path / "ref")
    assert model.config.unet == cfg.unet and model.config.vae == cfg.vae and model.config.text == cfg.text
    assert_same_outputs(model, pipe, cfg)

    save_model(model, tmp_path / "sd.safetensors", format="sd")
    assert_same_outputs(load_model(tmp_path / "sd.safetensors"), pipe, cfg)


def test_foreign_sd_file_without_config_is_inferred(tmp_path):
    """An SD file with no metadata (as from A1111): the structure is read from the shapes."""
    cfg = CONFIGS["inpaint-9ch"]
    pipe = write_reference_folder(cfg, tmp_path / "ref")
    save_model(load_model(tmp_path / "ref"), tmp_path / "ours-sd.safetensors", format="sd")
    from nanoldm.checkpoint.formats import read_tensors
    tensors, _ = read_tensors(tmp_path / "ours-sd.safetensors")
    write_safetensors(tmp_path / "plain.safetensors", tensors)
    model = load_model(tmp_path / "plain.safetensors", config=cfg)  # heads are not in the shapes: give them
    assert_same_outputs(model, pipe, cfg)
    from nanoldm.checkpoint.infer import infer_config_from_sd
    inferred = infer_config_from_sd(tensors)  # heads follow the SD rule, which does not fit this tiny model
    assert inferred.unet.in_channels == 9 and inferred.unet.channel_mult == cfg.unet.channel_mult
    assert inferred.vae.channel_mult == cfg.vae.channel_mult and inferred.text.layers == cfg.text.layers


def test_ckpt_with_state_dict_wrapper_loads(tmp_path):
    pipe = write_reference_folder(TINY, tmp_path / "ref")
    save_model(load_model(tmp_path / "ref"), tmp_path / "sd.safetensors", format="sd")
    from nanoldm.checkpoint.formats import read_tensors
    tensors, _ = read_tensors(tmp_path / "sd.safetensors")
    torch.save({"state_dict": tensors, "global_step": 10}, tmp_path / "model.ckpt")
    assert_same_outputs(load_model(tmp_path / "model.ckpt", config=TINY), pipe, TINY)


def test_round_trip_ours_diffusers_sd_ours_is_bit_identical(tmp_path):
    from nanoldm.model import LatentDiffusion
    model = LatentDiffusion.from_config(CONFIGS["linear-proj"], tokenizer=CLIPTokenizer.default())
    save_model(model, tmp_path / "a.safetensors")
    save_model(load_model(tmp_path / "a.safetensors"), tmp_path / "b", format="diffusers")
    save_model(load_model(tmp_path / "b"), tmp_path / "c.safetensors", format="sd")
    back = load_model(tmp_path / "c.safetensors")
    assert back.config == model.config
    want, got = model.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_our_diffusers_folder_loads_in_diffusers(tmp_path):
    """What we write as a diffusers folder is what diffusers itself reads, with the same outputs."""
    from nanoldm.model import LatentDiffusion
    model = LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()).eval()
    save_model(model, tmp_path / "out", format="diffusers")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "out")
    assert_same_outputs(model, pipe, TINY)

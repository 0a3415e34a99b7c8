"""Key tables and config translation, proven against diffusers' and transformers' own code.

The central check: diffusers state dict -> ours -> SD single-file names, then diffusers' own
``convert_ldm_*_checkpoint`` (the code that loads real SD files) gives back the original tensors.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel

from nanoldm.checkpoint import keymap
from nanoldm.checkpoint.diffusers_config import (
    model_index,
    schedule_config_from_diffusers,
    schedule_config_to_diffusers,
    text_config_from_transformers,
    text_config_to_transformers,
    unet_config_from_diffusers,
    unet_config_to_diffusers,
    vae_config_from_diffusers,
    vae_config_to_diffusers,
)
from nanoldm.checkpoint.infer import infer_config_from_sd
from nanoldm.config import SD_V1, SHAPES_TINY, ModelConfig, ScheduleConfig

# --- tiny diffusers / transformers models --------------------------------------------------

_SD1_DOWN = ("CrossAttnDownBlock2D", "DownBlock2D")
_SD1_UP = ("UpBlock2D", "CrossAttnUpBlock2D")
_ALL_ATTN = dict(down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2)
_TINY_UNET = dict(block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=2, sample_size=8,
                  down_block_types=_SD1_DOWN, up_block_types=_SD1_UP)
UNET_VARIANTS = {
    "conv": dict(layers_per_block=2, norm_num_groups=8),
    "linear": dict(layers_per_block=1, use_linear_projection=True, attention_head_dim=[4, 8],
                   transformer_layers_per_block=2, **_ALL_ATTN),
    "inpaint": dict(layers_per_block=1, in_channels=9),
    "classes": dict(layers_per_block=1, num_class_embeds=10, **_ALL_ATTN),
    "three_levels": dict(layers_per_block=2, block_out_channels=(32, 32, 64),
                         down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")),
}
_TINY_VAE = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4, sample_size=32)
_TINY_CLIP = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=2, max_position_embeddings=77)


def _tiny_unet(variant: str) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**_TINY_UNET, **UNET_VARIANTS[variant]}).eval()


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(**_TINY_VAE).eval()


@pytest.fixture(scope="module")
def tiny_clip() -> CLIPTextModel:
    torch.manual_seed(2)
    return CLIPTextModel(CLIPTextConfig(**_TINY_CLIP)).eval()


def _config_of(unet, vae, clip) -> ModelConfig:
    return ModelConfig(unet=unet_config_from_diffusers(unet.config), vae=vae_config_from_diffusers(vae.config),
                       text=text_config_from_transformers(clip.config.to_dict()))


def _parts(unet, vae, clip) -> dict:
    return {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": clip.state_dict()}


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        assert got[k].shape == w.shape, k
        if not w.is_meta:
            assert torch.equal(got[k], w), k


# --- our SD names are the real ones ---------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(UNET_VARIANTS))
def test_diffusers_to_sd_is_undone_by_diffusers_own_converter(variant, tiny_vae, tiny_clip):
    unet = _tiny_unet(variant)
    cfg = _config_of(unet, tiny_vae, tiny_clip)
    ours = keymap.diffusers_to_ours(_parts(unet, tiny_vae, tiny_clip), cfg)
    sd = keymap.ours_to_sd(ours, cfg)
    assert all(k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for k in sd)
    _assert_same(convert_ldm_unet_checkpoint(sd, dict(unet.config)), unet.state_dict())
    _assert_same(convert_ldm_vae_checkpoint(sd, dict(tiny_vae.config)), tiny_vae.state_dict())
    on_disk_text = {"text_model." + k: v for k, v in tiny_clip.state_dict().items()}
    _assert_same(convert_ldm_clip_checkpoint(sd), on_disk_text)
    _assert_same(keymap.sd_to_ours(sd, cfg), ours)


@pytest.mark.parametrize("variant", sorted(UNET_VARIANTS))
def test_tables_cover_exactly_the_diffusers_parameters(variant, tiny_vae, tiny_clip):
    unet = _tiny_unet(variant)
    cfg = _config_of(unet, tiny_vae, tiny_clip)
    assert set(keymap.unet_to_sd(cfg.unet)) == set(unet.state_dict())
    assert set(keymap.vae_to_sd(cfg.vae)) == set(tiny_vae.state_dict())
    assert set(keymap.text_to_sd(cfg.text)) == set(tiny_clip.state_dict())


def test_vae_attention_is_a_1x1_conv_in_sd_files(tiny_vae, tiny_clip):
    cfg = _config_of(_tiny_unet("conv"), tiny_vae, tiny_clip)
    sd = keymap.ours_to_sd(keymap.diffusers_to_ours({"vae": tiny_vae.state_dict()}, cfg), cfg)
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert sd["first_stage_model.decoder.mid.attn_1.proj_out.bias"].shape == (64,)


# --- the real SD 1.x sizes, on the meta device ----------------------------------------------

SD15_UNET_JSON = {
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
SD15_VAE_JSON = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3,
    "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SD15_TEXT_JSON = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "torch_dtype": "float32", "vocab_size": 49408,
}


@pytest.fixture(scope="module")
def sd15_meta():
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SD15_UNET_JSON)
        vae = AutoencoderKL.from_config(SD15_VAE_JSON)
        clip = CLIPTextModel(CLIPTextConfig.from_dict(SD15_TEXT_JSON))
    return unet, vae, clip


def test_sd15_configs_are_the_sd_v1_preset():
    assert unet_config_from_diffusers(SD15_UNET_JSON) == SD_V1.unet
    assert vae_config_from_diffusers(SD15_VAE_JSON) == SD_V1.vae
    assert text_config_from_transformers(SD15_TEXT_JSON) == SD_V1.text


def test_sd_v1_key_counts_and_round_trips(sd15_meta):
    unet, vae, clip = sd15_meta
    assert len(keymap.unet_to_sd(SD_V1.unet)) == 686
    assert len(keymap.vae_to_sd(SD_V1.vae)) == 248
    assert len(keymap.text_to_sd(SD_V1.text)) == 196
    ours = keymap.diffusers_to_ours(_parts(*sd15_meta), SD_V1)
    assert set(ours) == set(keymap.sd_table(SD_V1))
    sd = keymap.ours_to_sd(ours, SD_V1)
    assert len(sd) == 686 + 248 + 196
    _assert_same(keymap.sd_to_ours(sd, SD_V1), ours)
    back = keymap.diffusers_to_ours(keymap.ours_to_diffusers(ours, SD_V1), SD_V1)
    _assert_same(back, ours)
    _assert_same(convert_ldm_unet_checkpoint(sd, dict(unet.config)), unet.state_dict())
    _assert_same(convert_ldm_vae_checkpoint(sd, dict(vae.config)), vae.state_dict())


# Landmarks of the real SD 1.x file that diffusers' converter would also accept misspelt (it
# looks for an upsampler at both ``output_blocks.n.1.conv`` and ``.2.conv``).
SD15_LANDMARKS = {
    "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
    "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
    "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "first_stage_model.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
}


def test_sd_v1_landmark_keys(sd15_meta):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    sd = keymap.ours_to_sd(keymap.diffusers_to_ours(_parts(*sd15_meta), SD_V1), SD_V1)
    assert {k: tuple(sd[k].shape) for k in SD15_LANDMARKS if k in sd} == SD15_LANDMARKS
    assert "model.diffusion_model.output_blocks.5.1.conv.weight" not in sd
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in sd
    assert infer_diffusers_model_type(sd) == "v1"


def test_infer_recovers_sd_v1(sd15_meta):
    sd = keymap.ours_to_sd(keymap.diffusers_to_ours(_parts(*sd15_meta), SD_V1), SD_V1)
    sd |= {"betas": torch.empty(1000, device="meta"), "model_ema.decay": torch.empty((), device="meta"),
           "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.empty(1, 77, device="meta")}
    assert infer_config_from_sd(sd) == SD_V1
    assert infer_config_from_sd({"state_dict": sd}) == SD_V1


# --- SD file variants ----------------------------------------------------------------------

def test_sd_to_ours_tolerates_sd_file_variants(tiny_vae, tiny_clip):
    cfg = _config_of(_tiny_unet("conv"), tiny_vae, tiny_clip)
    ours = keymap.diffusers_to_ours(_parts(_tiny_unet("conv"), tiny_vae, tiny_clip), cfg)
    sd = keymap.ours_to_sd(ours, cfg)
    old_text = {k.replace("transformer.text_model.", "transformer."): v for k, v in sd.items()}
    extras = {"betas": torch.zeros(1000), "alphas_cumprod": torch.zeros(1000), "model_ema.decay": torch.tensor(0.9),
              "model_ema.diffusion_modelout2weight": torch.zeros(1), "scale_factor": torch.tensor(0.18215),
              "cond_stage_model.transformer.embeddings.position_ids": torch.arange(77)[None]}
    _assert_same(keymap.sd_to_ours({"state_dict": old_text | extras}, cfg), ours)
    unknown = {"model.diffusion_model.extra.weight": torch.zeros(1)}
    assert "model.diffusion_model.extra.weight" in keymap.sd_to_ours(sd | unknown, cfg)
    assert "unet.extra" in keymap.ours_to_sd({"unet.extra": torch.zeros(1)}, cfg)


def test_diffusers_to_ours_tolerates_old_names(tiny_vae, tiny_clip):
    unet = _tiny_unet("conv")
    cfg = _config_of(unet, tiny_vae, tiny_clip)
    ours = keymap.diffusers_to_ours(_parts(unet, tiny_vae, tiny_clip), cfg)
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old_vae = {}
    for k, v in tiny_vae.state_dict().items():
        for new, was in old.items():
            if f"attentions.0.{new}." in k:
                k, v = k.replace(new, was), (v[:, :, None, None] if v.ndim == 2 else v)
        old_vae[k] = v
    text = {"text_model." + k: v for k, v in tiny_clip.state_dict().items()}
    text["text_model.embeddings.position_ids"] = torch.arange(77)[None]
    parts = {"unet": unet.state_dict(), "vae": old_vae, "text_encoder": text}
    _assert_same(keymap.diffusers_to_ours(parts, cfg), ours)
    exported = keymap.ours_to_diffusers(ours, cfg)
    assert set(exported["text_encoder"]) == set(text) - {"text_model.embeddings.position_ids"}


def test_plain_autoencoder_has_no_diffusers_form():
    plain = dataclasses.replace(SHAPES_TINY, vae=dataclasses.replace(SHAPES_TINY.vae, variational=False))
    with pytest.raises(ValueError, match="plain AE"):
        keymap.ours_to_diffusers({}, plain)
    with pytest.raises(ValueError, match="plain AE"):
        vae_config_to_diffusers(plain.vae)
    with pytest.raises(ValueError, match="prefixes"):
        keymap.ours_to_diffusers({"conv_in.weight": torch.zeros(1)}, SHAPES_TINY)


# --- config translation --------------------------------------------------------------------

UNET_CONFIGS = {
    "sd_v1": SD_V1.unet,
    "shapes_tiny": SHAPES_TINY.unet,
    "linear_head_dim": dataclasses.replace(SD_V1.unet, use_linear_projection=True, num_heads=None, head_dim=64),
    "inpaint": dataclasses.replace(SD_V1.unet, in_channels=9),
    "classes_depth2": dataclasses.replace(SHAPES_TINY.unet, num_classes=7, transformer_depth=2, norm_groups=16),
}


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_unet_config_round_trip_and_diffusers_build(name):
    cfg = UNET_CONFIGS[name]
    d = unet_config_to_diffusers(cfg)
    assert unet_config_from_diffusers(d) == cfg
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(d)
    assert set(unet.state_dict()) == set(keymap.unet_to_sd(cfg))


def test_sd2_style_head_counts_become_head_dim():
    d = {**SD15_UNET_JSON, "attention_head_dim": [5, 10, 20, 20], "use_linear_projection": True,
         "cross_attention_dim": 1024}
    cfg = unet_config_from_diffusers(d)
    assert (cfg.num_heads, cfg.head_dim, cfg.use_linear_projection) == (None, 64, True)
    assert unet_config_to_diffusers(cfg)["attention_head_dim"] == [5, 10, 20, 20]
    with pytest.raises(ValueError, match="unsupported"):
        unet_config_from_diffusers({**SD15_UNET_JSON, "class_embed_type": "projection"})


@pytest.mark.parametrize("cfg", [SD_V1, SHAPES_TINY], ids=["sd_v1", "shapes_tiny"])
def test_vae_text_schedule_round_trip(cfg):
    d = vae_config_to_diffusers(cfg.vae)
    assert vae_config_from_diffusers(d) == cfg.vae
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(d)
        clip = CLIPTextModel(CLIPTextConfig.from_dict(text_config_to_transformers(cfg.text)))
    assert set(vae.state_dict()) == set(keymap.vae_to_sd(cfg.vae))
    assert text_config_from_transformers(text_config_to_transformers(cfg.text)) == cfg.text
    assert set(clip.state_dict()) == set(keymap.text_to_sd(cfg.text))
    s = schedule_config_to_diffusers(cfg.schedule)
    assert schedule_config_from_diffusers(s) == cfg.schedule
    pndm = PNDMScheduler.from_config(s)
    assert (pndm.config.steps_offset, pndm.config.skip_prk_steps, pndm.config.beta_schedule) == (1, True,
                                                                                                  "scaled_linear")


def test_model_index_names_the_pipeline_parts():
    index = model_index()
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]


# --- inferring a config from SD shapes -----------------------------------------------------

def _as_inferred(cfg: ModelConfig) -> ModelConfig:
    """What shape inference can know: 32 norm groups, heads by the documented rule."""
    heads = dict(num_heads=8, head_dim=None) if cfg.unet.context_dim == 768 else dict(num_heads=None, head_dim=64)
    return dataclasses.replace(
        cfg,
        unet=dataclasses.replace(cfg.unet, norm_groups=32, **heads),
        text=dataclasses.replace(cfg.text, heads=max(1, cfg.text.width // 64)),
    )


@pytest.mark.parametrize("variant", sorted(UNET_VARIANTS))
def test_infer_recovers_tiny_configs(variant, tiny_vae, tiny_clip):
    unet = _tiny_unet(variant)
    cfg = _config_of(unet, tiny_vae, tiny_clip)
    sd = keymap.ours_to_sd(keymap.diffusers_to_ours(_parts(unet, tiny_vae, tiny_clip), cfg), cfg)
    assert infer_config_from_sd(sd) == _as_inferred(cfg)


def test_infer_reads_schedule_and_plain_ae(tiny_vae, tiny_clip):
    unet = _tiny_unet("conv")
    cfg = _config_of(unet, tiny_vae, tiny_clip)
    sd = keymap.ours_to_sd(keymap.diffusers_to_ours(_parts(unet, tiny_vae, tiny_clip), cfg), cfg)
    sd["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64).float() ** 2
    assert infer_config_from_sd(sd).schedule == ScheduleConfig()
    sd["betas"] = torch.linspace(1e-4, 2e-2, 500)
    assert infer_config_from_sd(sd).schedule == ScheduleConfig(num_train_timesteps=500, beta_start=1e-4,
                                                               beta_end=2e-2, beta_schedule="linear")
    z = cfg.vae.z_channels
    sd["first_stage_model.quant_conv.weight"] = torch.zeros(z, z, 1, 1)
    assert infer_config_from_sd(sd).vae.variational is False


def test_infer_refuses_non_sd_files():
    with pytest.raises(ValueError, match="no keys with prefix model.diffusion_model."):
        infer_config_from_sd({"conv_in.weight": torch.zeros(1)})
    unet_only = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}
    with pytest.raises(ValueError, match="input_blocks.1.0.out_layers.3.weight"):
        infer_config_from_sd(unet_only)

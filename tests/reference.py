"""The reference implementations, built by hand from our configs (never through our own config translation),
for parity tests and benchmarks: diffusers' UNet and VAE, transformers' CLIP text model, and whole diffusers
pipeline folders written by diffusers itself."""
from __future__ import annotations

from pathlib import Path

from nanoldm.config import AutoencoderConfig, ModelConfig, TextEncoderConfig, UNetConfig

import diffusers  # noqa: E402  (test-only dependency)
import transformers  # noqa: E402


def reference_unet(cfg: UNetConfig):
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    heads = cfg.num_heads if cfg.head_dim is None else tuple(cfg.model_channels * m // cfg.head_dim for m in cfg.channel_mult)
    return diffusers.UNet2DConditionModel(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, down_block_types=down, up_block_types=up,
        block_out_channels=tuple(cfg.model_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.num_res_blocks, cross_attention_dim=cfg.context_dim, attention_head_dim=heads,
        norm_num_groups=cfg.norm_groups, use_linear_projection=cfg.use_linear_projection,
        num_class_embeds=cfg.num_classes, mid_block_type="UNetMidBlock2DCrossAttn", sample_size=64).eval()


def reference_vae(cfg: AutoencoderConfig):
    n = len(cfg.channel_mult)
    return diffusers.AutoencoderKL(
        in_channels=cfg.in_channels, out_channels=cfg.out_channels, latent_channels=cfg.z_channels,
        block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mult),
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=cfg.num_res_blocks, norm_num_groups=cfg.norm_groups, scaling_factor=cfg.scale_factor).eval()


def reference_text(cfg: TextEncoderConfig):
    return transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.width, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, intermediate_size=cfg.mlp_dim, max_position_embeddings=cfg.max_positions,
        hidden_act=cfg.activation, layer_norm_eps=cfg.layer_norm_eps)).eval()


def sd_scheduler():
    """The scheduler config every SD 1.x folder ships (PNDM, scaled-linear betas, steps_offset 1)."""
    return diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1,
                                   set_alpha_to_one=False)


def write_reference_folder(cfg: ModelConfig, folder: Path):
    """A diffusers StableDiffusionPipeline folder, written by diffusers and transformers themselves."""
    from nanoldm.text.tokenizer import CLIPTokenizer

    tok_dir = folder.parent / f"{folder.name}-tok"
    CLIPTokenizer.default().save_folder(tok_dir)
    pipe = diffusers.StableDiffusionPipeline(
        vae=reference_vae(cfg.vae), text_encoder=reference_text(cfg.text),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(tok_dir), unet=reference_unet(cfg.unet),
        scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return pipe

"""Recover a ``ModelConfig`` from the tensor shapes of an SD 1.x single file (which has no config).

What the shapes do not say, and what we assume instead:

* attention heads -- 8 heads when the cross-attention context is 768 wide (SD 1.x, CLIP ViT-L),
  otherwise 64 channels per head (the SD 2.x convention); text-encoder heads = width // 64
  (at least 1);
* GroupNorm groups -- 32 (every SD model);
* text activation / layer-norm eps -- CLIP ViT-L's quick-GELU and 1e-5;
* VAE ``scale_factor`` -- 0.18215 unless the file stores a ``scale_factor`` buffer;
* schedule -- read back from the ``betas`` buffer when present (linear or scaled-linear), else
  SD 1.x's; the prediction type (epsilon vs v) is invisible in the weights: epsilon.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from nanoldm.checkpoint.keymap import SD_TEXT, SD_UNET, SD_VAE, canonical_sd_key, unwrap_sd
from nanoldm.config import AutoencoderConfig, ModelConfig, ScheduleConfig, TextEncoderConfig, UNetConfig

SD1_CONTEXT_DIM = 768  # CLIP ViT-L/14 context: an SD 1.x UNet
SD1_NUM_HEADS = 8  # of 40..160 channels each
SD2_HEAD_DIM = 64
TEXT_HEAD_DIM = 64


def infer_config_from_sd(state: Mapping[str, Tensor]) -> ModelConfig:
    """Model config of an SD 1.x single-file state dict (or ``.ckpt`` dict), read from its shapes.

    Raises ValueError naming the missing part when ``state`` is not an SD 1.x checkpoint.
    """
    state = unwrap_sd(state)
    canon = {c: v for k, v in state.items() if (c := canonical_sd_key(k)) is not None}
    return ModelConfig(
        unet=_infer_unet(_part(canon, SD_UNET, "UNet")),
        vae=_infer_vae(_part(canon, SD_VAE, "VAE"), state.get("scale_factor")),
        text=_infer_text(_part(canon, SD_TEXT, "CLIP text encoder")),
        schedule=_infer_schedule(state.get("betas")),
    )


def _part(state: Mapping[str, Tensor], prefix: str, what: str) -> dict[str, Tensor]:
    """The keys under ``prefix``, with the prefix removed; ValueError if there are none."""
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if part:
        return part
    hint = ""
    if prefix == SD_TEXT and any(k.startswith("cond_stage_model.model.") for k in state):
        hint = " (this file has an OpenCLIP text encoder, as in SD 2.x, which is not supported)"
    raise ValueError(f"no keys with prefix {prefix} ({what}): not a Stable Diffusion 1.x checkpoint{hint}")


def _indices(keys, prefix: str) -> list[int]:
    """Sorted distinct integers that follow ``prefix`` in ``keys`` (``input_blocks.`` -> 0, 1, ...)."""
    return sorted({int(k[len(prefix):].split(".")[0]) for k in keys if k.startswith(prefix)})


def _need(part: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    if key not in part:
        raise ValueError(f"{what} has no {key!r}: not a Stable Diffusion 1.x checkpoint")
    return part[key]


def _multiple(width: int, base: int, what: str) -> int:
    if width % base:
        raise ValueError(f"{what}: width {width} is not a multiple of the base width {base}")
    return width // base


def _infer_unet(u: dict[str, Tensor]) -> UNetConfig:
    model_channels, in_channels = _need(u, "input_blocks.0.0.weight", "UNet").shape[:2]
    n_input = len(_indices(u, "input_blocks."))
    downs = [n for n in range(n_input) if f"input_blocks.{n}.0.op.weight" in u]
    num_res_blocks = downs[0] - 1 if downs else n_input - 1
    mult, attention = [], []
    for level in range(len(downs) + 1):
        n = 1 + level * (num_res_blocks + 1)  # first resnet of the level
        width = _need(u, f"input_blocks.{n}.0.out_layers.3.weight", "UNet").shape[0]
        mult.append(_multiple(width, model_channels, "UNet"))
        attention.append(f"input_blocks.{n}.1.proj_in.weight" in u)
    if "label_emb.0.0.weight" in u:
        raise ValueError("UNet has an MLP label embedding (SDXL / ADM style): not supported")
    proj_in = _need(u, "middle_block.1.proj_in.weight", "UNet")
    context_dim = _need(u, "middle_block.1.transformer_blocks.0.attn2.to_k.weight", "UNet").shape[1]
    if context_dim == SD1_CONTEXT_DIM:
        heads = dict(num_heads=SD1_NUM_HEADS, head_dim=None)
    else:
        heads = dict(num_heads=None, head_dim=SD2_HEAD_DIM)
    label = u.get("label_emb.weight")
    return UNetConfig(
        in_channels=in_channels,
        out_channels=_need(u, "out.2.weight", "UNet").shape[0],
        model_channels=model_channels,
        channel_mult=tuple(mult),
        num_res_blocks=num_res_blocks,
        attention_levels=tuple(attention),
        transformer_depth=len(_indices(u, "middle_block.1.transformer_blocks.")),
        context_dim=context_dim,
        use_linear_projection=proj_in.ndim == 2,  # Linear [C, C] vs 1x1 conv [C, C, 1, 1]
        num_classes=None if label is None else label.shape[0],
        **heads,
    )


def _infer_vae(v: dict[str, Tensor], scale_factor: Tensor | None) -> AutoencoderConfig:
    base, in_channels = _need(v, "encoder.conv_in.weight", "VAE").shape[:2]
    levels = _indices(v, "encoder.down.")
    widths = [_need(v, f"encoder.down.{i}.block.0.conv1.weight", "VAE").shape[0] for i in levels]
    z_channels = _need(v, "post_quant_conv.weight", "VAE").shape[0]
    moments = _need(v, "quant_conv.weight", "VAE").shape[0]  # 2z: mean and log-variance; z: plain AE
    extra = {}
    if scale_factor is not None and not scale_factor.is_meta:
        extra["scale_factor"] = float(scale_factor)
    return AutoencoderConfig(
        in_channels=in_channels,
        out_channels=_need(v, "decoder.conv_out.weight", "VAE").shape[0],
        base_channels=base,
        channel_mult=tuple(_multiple(w, base, "VAE") for w in widths),
        num_res_blocks=len(_indices(v, "encoder.down.0.block.")),
        z_channels=z_channels,
        variational=moments == 2 * z_channels,
        **extra,
    )


def _infer_text(t: dict[str, Tensor]) -> TextEncoderConfig:
    vocab_size, width = _need(t, "embeddings.token_embedding.weight", "text encoder").shape
    return TextEncoderConfig(
        vocab_size=vocab_size,
        width=width,
        layers=len(_indices(t, "encoder.layers.")),
        heads=max(1, width // TEXT_HEAD_DIM),
        mlp_dim=_need(t, "encoder.layers.0.mlp.fc1.weight", "text encoder").shape[0],
        max_positions=_need(t, "embeddings.position_embedding.weight", "text encoder").shape[0],
    )


def _infer_schedule(betas: Tensor | None) -> ScheduleConfig:
    """Training schedule from the stored ``betas`` buffer; SD 1.x defaults when absent or unrecognised."""
    if betas is None or betas.is_meta or betas.ndim != 1 or len(betas) < 2:
        return ScheduleConfig()
    b = betas.double()
    start, end, n = float(b[0]), float(b[-1]), len(b)
    candidates = {
        "scaled_linear": torch.linspace(math.sqrt(start), math.sqrt(end), n, dtype=torch.float64) ** 2,
        "linear": torch.linspace(start, end, n, dtype=torch.float64),
    }
    for name, ref in candidates.items():
        if torch.allclose(b, ref, rtol=1e-4, atol=1e-8):
            return ScheduleConfig(num_train_timesteps=n, beta_start=_short(start), beta_end=_short(end),
                                  beta_schedule=name)
    return ScheduleConfig()


def _short(x: float) -> float:
    """Undo float32 storage noise: 0.0008500000112690032 -> 0.00085."""
    return float(f"{x:.6g}")

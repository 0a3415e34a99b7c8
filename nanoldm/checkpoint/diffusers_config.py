"""Our config dataclasses <-> the ``config.json`` dicts of a diffusers Stable Diffusion folder.

One pair of functions per folder entry: ``unet/``, ``vae/``, ``text_encoder/`` (a transformers
``CLIPTextConfig``), ``scheduler/``, plus the pipeline's ``model_index.json``. Import refuses
options our modules do not implement, rather than silently building a different network.

The UNet's ``attention_head_dim`` is a historical misnomer in diffusers: it holds the NUMBER of
heads. SD 1.x stores one int (8 heads everywhere) -> our ``num_heads``; SD 2.x stores one count per
level (``[5, 10, 20, 20]`` for widths 320..1280, i.e. 64 channels each) -> our ``head_dim``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from nanoldm.config import AutoencoderConfig, PredictionType, ScheduleConfig, TextEncoderConfig, UNetConfig
from nanoldm.diffusion.schedule import SPACINGS

# options whose value must be the SD 1.x one: name -> the only value we implement
_UNET_FIXED = {
    "act_fn": "silu", "center_input_sample": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "norm_eps": 1e-5, "mid_block_type": "UNetMidBlock2DCrossAttn", "downsample_padding": 1,
    "mid_block_scale_factor": 1, "class_embed_type": None, "addition_embed_type": None,
    "encoder_hid_dim": None, "time_embedding_type": "positional", "time_embedding_dim": None,
    "time_cond_proj_dim": None, "timestep_post_act": None, "time_embedding_act_fn": None,
    "resnet_time_scale_shift": "default", "conv_in_kernel": 3, "conv_out_kernel": 3,
    "dual_cross_attention": False, "only_cross_attention": False, "attention_type": "default",
    "resnet_out_scale_factor": 1.0, "resnet_skip_time_act": False, "cross_attention_norm": None,
    "class_embeddings_concat": False, "reverse_transformer_layers_per_block": None,
}
_VAE_FIXED = {
    "act_fn": "silu", "use_quant_conv": True, "use_post_quant_conv": True,
    "mid_block_add_attention": True, "shift_factor": None, "latents_mean": None, "latents_std": None,
}
_BETA_SCHEDULE_TO_DIFFUSERS = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def _check_fixed(d: Mapping, fixed: Mapping, what: str) -> None:
    """ValueError for every option in ``d`` that differs from the only value we implement."""
    bad = {k: d[k] for k, v in fixed.items() if k in d and not _is(d[k], v)}
    if bad:
        supported = {k: fixed[k] for k in bad}
        raise ValueError(f"{what}: unsupported option values {bad}; nanoldm implements only {supported}")


def _is(value, expected) -> bool:
    """``value == expected``, where a per-block list counts if every entry equals ``expected``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return all(v == expected for v in value)
    return value == expected


def _one(value, what: str):
    """An int, or a per-block list whose entries all agree, as one value."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(set(value)) != 1:
            raise ValueError(f"{what} differs between blocks ({list(value)}): not supported")
        return value[0]
    return value


# --- UNet ----------------------------------------------------------------------------------

def _unet_heads(d: Mapping, widths: list[int], attention: list[bool]) -> dict:
    """``num_heads`` or ``head_dim`` from diffusers' heads-per-level (see module docstring)."""
    heads = d.get("num_attention_heads") or d.get("attention_head_dim", 8)
    if not isinstance(heads, Sequence):
        return dict(num_heads=int(heads), head_dim=None)
    used = [(w, h) for w, h, a in zip(widths, heads, _with_mid(attention)) if a]
    if all(w % h == 0 for w, h in used) and len({w // h for w, h in used}) == 1:
        return dict(num_heads=None, head_dim=used[0][0] // used[0][1])
    if len({h for _, h in used}) == 1:
        return dict(num_heads=used[0][1], head_dim=None)
    raise ValueError(f"attention_head_dim {list(heads)} gives neither one head count nor one head size")


def _with_mid(attention: Sequence[bool]) -> list[bool]:
    """Levels whose head entry diffusers uses: attention levels, and the deepest (the mid block's)."""
    return [*attention[:-1], True]


def _attention_levels(d: Mapping) -> list[bool]:
    down, up = list(d["down_block_types"]), list(d["up_block_types"])
    known = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
    if any(t not in known for t in down):
        raise ValueError(f"down_block_types {down}: only CrossAttnDownBlock2D / DownBlock2D are supported")
    attention = [known[t] for t in down]
    expected_up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)]
    if up != expected_up:
        raise ValueError(f"up_block_types {up} do not mirror down_block_types (expected {expected_up})")
    return attention


def unet_config_from_diffusers(d: Mapping) -> UNetConfig:
    """``UNet2DConditionModel`` config dict -> ``UNetConfig`` (ValueError on what we cannot build)."""
    _check_fixed(d, _UNET_FIXED, "UNet2DConditionModel")
    widths = list(d["block_out_channels"])
    base = widths[0]
    if any(w % base for w in widths):
        raise ValueError(f"block_out_channels {widths} are not multiples of the first entry")
    attention = _attention_levels(d)
    return UNetConfig(
        in_channels=d.get("in_channels", 4),
        out_channels=d.get("out_channels", 4),
        model_channels=base,
        channel_mult=tuple(w // base for w in widths),
        num_res_blocks=_one(d.get("layers_per_block", 2), "layers_per_block"),
        attention_levels=tuple(attention),
        transformer_depth=_one(d.get("transformer_layers_per_block", 1), "transformer_layers_per_block"),
        context_dim=_one(d.get("cross_attention_dim", 1280), "cross_attention_dim"),
        use_linear_projection=bool(d.get("use_linear_projection", False)),
        num_classes=d.get("num_class_embeds"),
        norm_groups=d.get("norm_num_groups", 32),
        **_unet_heads(d, widths, attention),
    )


def unet_config_to_diffusers(cfg: UNetConfig, *, sample_size: int = 64) -> dict:
    """``UNetConfig`` -> a config dict ``UNet2DConditionModel.from_config`` builds the same network from.

    ``sample_size`` (latent side) is metadata only: 64 for 512 px SD 1.x images.
    """
    widths = [cfg.model_channels * m for m in cfg.channel_mult]
    heads = cfg.num_heads
    if heads is None:  # one count per level; unused levels get any positive count
        heads = [cfg.heads_for(w) if a else max(w // cfg.head_dim, 1)
                 for w, a in zip(widths, _with_mid(cfg.attention_levels))]
    return {
        "_class_name": "UNet2DConditionModel",
        **_UNET_FIXED,
        "sample_size": sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": widths,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels)],
        "layers_per_block": cfg.num_res_blocks,
        "transformer_layers_per_block": cfg.transformer_depth,
        "cross_attention_dim": cfg.context_dim,
        "attention_head_dim": heads,  # diffusers: number of heads (int, or one per level)
        "num_attention_heads": None,
        "use_linear_projection": cfg.use_linear_projection,
        "num_class_embeds": cfg.num_classes,
        "norm_num_groups": cfg.norm_groups,
        "upcast_attention": False,
        "dropout": 0.0,
    }


# --- VAE -----------------------------------------------------------------------------------

def vae_config_from_diffusers(d: Mapping) -> AutoencoderConfig:
    """``AutoencoderKL`` config dict -> ``AutoencoderConfig`` (always variational)."""
    _check_fixed(d, _VAE_FIXED, "AutoencoderKL")
    widths = list(d.get("block_out_channels", [64]))
    levels = len(widths)
    if list(d.get("down_block_types", [])) != ["DownEncoderBlock2D"] * levels or \
            list(d.get("up_block_types", [])) != ["UpDecoderBlock2D"] * levels:
        raise ValueError("AutoencoderKL: only DownEncoderBlock2D / UpDecoderBlock2D, one per level, are supported")
    base = widths[0]
    if any(w % base for w in widths):
        raise ValueError(f"block_out_channels {widths} are not multiples of the first entry")
    return AutoencoderConfig(
        in_channels=d.get("in_channels", 3),
        out_channels=d.get("out_channels", 3),
        base_channels=base,
        channel_mult=tuple(w // base for w in widths),
        num_res_blocks=d.get("layers_per_block", 1),
        z_channels=d.get("latent_channels", 4),
        norm_groups=d.get("norm_num_groups", 32),
        variational=True,
        scale_factor=float(d.get("scaling_factor", 0.18215)),
    )


def vae_config_to_diffusers(cfg: AutoencoderConfig, *, sample_size: int = 512) -> dict:
    """``AutoencoderConfig`` -> ``AutoencoderKL`` config dict. A plain AE has no equivalent: ValueError."""
    if not cfg.variational:
        raise ValueError("AutoencoderConfig(variational=False) is a plain AE: diffusers' AutoencoderKL "
                         "cannot represent it")
    levels = len(cfg.channel_mult)
    return {
        "_class_name": "AutoencoderKL",
        **_VAE_FIXED,
        "sample_size": sample_size,
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "block_out_channels": [cfg.base_channels * m for m in cfg.channel_mult],
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.z_channels,
        "norm_num_groups": cfg.norm_groups,
        "scaling_factor": cfg.scale_factor,
        "force_upcast": True,
    }


# --- text encoder --------------------------------------------------------------------------

def text_config_from_transformers(d: Mapping) -> TextEncoderConfig:
    """transformers ``CLIPTextConfig`` dict -> ``TextEncoderConfig``."""
    act = d.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise ValueError(f"CLIPTextConfig hidden_act={act!r}: only quick_gelu and gelu are supported")
    return TextEncoderConfig(
        vocab_size=d.get("vocab_size", 49408),
        width=d.get("hidden_size", 512),
        layers=d.get("num_hidden_layers", 12),
        heads=d.get("num_attention_heads", 8),
        mlp_dim=d.get("intermediate_size", 2048),
        max_positions=d.get("max_position_embeddings", 77),
        activation=act,
        layer_norm_eps=float(d.get("layer_norm_eps", 1e-5)),
    )


def text_config_to_transformers(cfg: TextEncoderConfig) -> dict:
    """``TextEncoderConfig`` -> ``text_encoder/config.json`` content for transformers' ``CLIPTextModel``."""
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.width,
        "intermediate_size": cfg.mlp_dim,
        "projection_dim": cfg.width,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "max_position_embeddings": cfg.max_positions,
        "hidden_act": cfg.activation,
        "layer_norm_eps": cfg.layer_norm_eps,
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "bos_token_id": 49406,  # <|startoftext|>
        "eos_token_id": 49407,  # <|endoftext|>: pooled output is read at this token
        "pad_token_id": 1,
        "torch_dtype": "float32",
    }


# --- scheduler and pipeline ----------------------------------------------------------------

def schedule_config_from_diffusers(d: Mapping) -> ScheduleConfig:
    """Any diffusers scheduler config dict -> ``ScheduleConfig`` (training betas and prediction type)."""
    if d.get("trained_betas") is not None:
        raise ValueError("scheduler config with explicit trained_betas: not supported")
    from_diffusers = {v: k for k, v in _BETA_SCHEDULE_TO_DIFFUSERS.items()}
    schedule = d.get("beta_schedule", "linear")
    if schedule not in from_diffusers:
        raise ValueError(f"beta_schedule {schedule!r}: supported are {sorted(from_diffusers)}")
    if d.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler config with rescale_betas_zero_snr: not supported (its last noise level is "
                         "infinite)")
    spacing = d.get("timestep_spacing")
    if spacing is not None and spacing not in SPACINGS:
        raise ValueError(f"timestep_spacing {spacing!r}: supported are {', '.join(SPACINGS)}")
    return ScheduleConfig(
        num_train_timesteps=d.get("num_train_timesteps", 1000),
        beta_start=float(d.get("beta_start", 0.0001)),
        beta_end=float(d.get("beta_end", 0.02)),
        beta_schedule=from_diffusers[schedule],
        prediction_type=PredictionType(d.get("prediction_type", "epsilon")),
        timestep_spacing=spacing,
        steps_offset=int(d.get("steps_offset", 0)),  # diffusers' schedulers default to 0
        use_karras_sigmas=bool(d.get("use_karras_sigmas", False)),
    )


def schedule_config_to_diffusers(cfg: ScheduleConfig) -> dict:
    """``ScheduleConfig`` -> ``scheduler/scheduler_config.json`` of an SD 1.x folder (PNDM, as shipped)."""
    return {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "beta_schedule": _BETA_SCHEDULE_TO_DIFFUSERS[cfg.beta_schedule],
        "trained_betas": None,
        "prediction_type": PredictionType(cfg.prediction_type).value,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": cfg.steps_offset,
        "clip_sample": False,
        # written only when set: without them each diffusers scheduler uses its own default, as nanoldm does
        **({"timestep_spacing": cfg.timestep_spacing} if cfg.timestep_spacing else {}),
        **({"use_karras_sigmas": True} if cfg.use_karras_sigmas else {}),
    }


def model_index() -> dict:
    """``model_index.json`` of a ``StableDiffusionPipeline`` folder without safety checker."""
    return {
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }

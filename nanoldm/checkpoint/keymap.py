"""Every checkpoint-name conversion in nanoldm, in one file.

Three naming schemes meet here:

* **ours** -- our modules' ``state_dict`` keys. UNet and VAE keys are diffusers' names, text
  encoder keys are transformers' ``CLIPTextModel`` names without ``text_model.``; a whole model
  prefixes them with ``unet.``, ``vae.``, ``text_encoder.``.
* **SD** -- the CompVis / A1111 single file: ``model.diffusion_model.`` (UNet),
  ``first_stage_model.`` (VAE), ``cond_stage_model.transformer.text_model.`` (CLIP).
* **diffusers** -- a pipeline folder: one state dict per part; the text encoder's on-disk keys
  carry ``text_model.``.

The SD tables are built by walking the same topology the modules are built from, so a table holds
exactly the parameters of one config -- nothing is matched by pattern. The only tensor that changes
shape is the VAE mid-block attention projection: a Linear ``[C, C]`` for us, a 1x1 conv
``[C, C, 1, 1]`` in SD files.

Keys a table does not know are passed through unchanged (never dropped), so the loader's strict
check can name them. Only the known non-weight entries of SD files are discarded.
"""
from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from nanoldm.config import AutoencoderConfig, ModelConfig, TextEncoderConfig, UNetConfig

SD_UNET = "model.diffusion_model."
SD_VAE = "first_stage_model."
SD_TEXT = "cond_stage_model.transformer.text_model."
SD_TEXT_OLD = "cond_stage_model.transformer."  # very old files: no ``text_model.`` level
OURS_PREFIX = {"unet": "unet.", "vae": "vae.", "text_encoder": "text_encoder."}
DIFFUSERS_TEXT = "text_model."

# SD single files carry diffusion-schedule buffers and training state next to the weights.
SD_NON_WEIGHT_KEYS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights", "scale_factor",
})
SD_NON_WEIGHT_PREFIXES = ("model_ema.", "first_stage_model.loss.")  # EMA copy, VAE training loss

# VAE mid-block attention weights (ours) stored as 1x1 convs in SD files.
VAE_ATTENTION_WEIGHTS = frozenset(
    f"{side}.mid_block.attentions.0.{proj}.weight"
    for side in ("encoder", "decoder")
    for proj in ("to_q", "to_k", "to_v", "to_out.0")
)
# diffusers < 0.14 named those projections differently.
_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _pair(table: dict[str, str], ours: str, sd: str, *, bias: bool = True) -> None:
    """Map one layer's parameters: ``weight`` and, if it has one, ``bias``."""
    table[f"{ours}.weight"] = f"{sd}.weight"
    if bias:
        table[f"{ours}.bias"] = f"{sd}.bias"


# --- UNet ----------------------------------------------------------------------------------

_UNET_RESNET = (
    ("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
)


def _unet_resnet(t: dict, ours: str, sd: str, in_ch: int, out_ch: int) -> None:
    for o, s in _UNET_RESNET:
        _pair(t, f"{ours}.{o}", f"{sd}.{s}")
    if in_ch != out_ch:
        _pair(t, f"{ours}.conv_shortcut", f"{sd}.skip_connection")


def _transformer(t: dict, ours: str, sd: str, depth: int) -> None:
    """SpatialTransformer: both sides use the same names below the block prefix."""
    names = ["norm", "proj_in", "proj_out"]
    for k in range(depth):
        b = f"transformer_blocks.{k}"
        names += [f"{b}.{n}" for n in ("norm1", "norm2", "norm3", "ff.net.0.proj", "ff.net.2")]
        names += [f"{b}.{a}.to_out.0" for a in ("attn1", "attn2")]
        for a in ("attn1", "attn2"):
            for p in ("to_q", "to_k", "to_v"):
                _pair(t, f"{ours}.{b}.{a}.{p}", f"{sd}.{b}.{a}.{p}", bias=False)
    for n in names:
        _pair(t, f"{ours}.{n}", f"{sd}.{n}")


def _unet_down(t: dict, cfg: UNetConfig) -> list[int]:
    """Encoder half: ``input_blocks.n`` counts every resnet and downsampler. Returns skip widths."""
    ch, n, skips = cfg.model_channels, 1, [cfg.model_channels]
    for level, mult in enumerate(cfg.channel_mult):
        ours, out = f"down_blocks.{level}", cfg.model_channels * mult
        for j in range(cfg.num_res_blocks):
            _unet_resnet(t, f"{ours}.resnets.{j}", f"input_blocks.{n}.0", ch, out)
            if cfg.attention_levels[level]:
                _transformer(t, f"{ours}.attentions.{j}", f"input_blocks.{n}.1", cfg.transformer_depth)
            ch = out
            skips.append(ch)
            n += 1
        if level != len(cfg.channel_mult) - 1:
            _pair(t, f"{ours}.downsamplers.0.conv", f"input_blocks.{n}.0.op")
            skips.append(ch)
            n += 1
    return skips


def _unet_up(t: dict, cfg: UNetConfig, skips: list[int]) -> None:
    """Decoder half: ``up_blocks.i`` runs deepest level first; the upsampler rides on the last block."""
    ch, n = skips[-1], 0
    for i, level in enumerate(reversed(range(len(cfg.channel_mult)))):
        ours, out = f"up_blocks.{i}", cfg.model_channels * cfg.channel_mult[level]
        for j in range(cfg.num_res_blocks + 1):
            _unet_resnet(t, f"{ours}.resnets.{j}", f"output_blocks.{n}.0", ch + skips.pop(), out)
            sub = 1
            if cfg.attention_levels[level]:
                _transformer(t, f"{ours}.attentions.{j}", f"output_blocks.{n}.1", cfg.transformer_depth)
                sub = 2
            ch = out
            n += 1
        if level != 0:
            _pair(t, f"{ours}.upsamplers.0.conv", f"output_blocks.{n - 1}.{sub}.conv")


def unet_to_sd(cfg: UNetConfig) -> dict[str, str]:
    """Our UNet key -> full SD single-file key, for every parameter of ``cfg``'s topology."""
    t: dict[str, str] = {}
    _pair(t, "time_embedding.linear_1", "time_embed.0")
    _pair(t, "time_embedding.linear_2", "time_embed.2")
    if cfg.num_classes is not None:
        t["class_embedding.weight"] = "label_emb.weight"
    _pair(t, "conv_in", "input_blocks.0.0")
    skips = _unet_down(t, cfg)
    ch = skips[-1]
    _unet_resnet(t, "mid_block.resnets.0", "middle_block.0", ch, ch)
    _transformer(t, "mid_block.attentions.0", "middle_block.1", cfg.transformer_depth)
    _unet_resnet(t, "mid_block.resnets.1", "middle_block.2", ch, ch)
    _unet_up(t, cfg, skips)
    _pair(t, "conv_norm_out", "out.0")
    _pair(t, "conv_out", "out.2")
    return {k: SD_UNET + v for k, v in t.items()}


# --- VAE -----------------------------------------------------------------------------------

def _vae_resnet(t: dict, ours: str, sd: str, in_ch: int, out_ch: int) -> None:
    for n in ("norm1", "conv1", "norm2", "conv2"):
        _pair(t, f"{ours}.{n}", f"{sd}.{n}")
    if in_ch != out_ch:
        _pair(t, f"{ours}.conv_shortcut", f"{sd}.nin_shortcut")


def _vae_mid(t: dict, side: str, ch: int) -> None:
    _vae_resnet(t, f"{side}.mid_block.resnets.0", f"{side}.mid.block_1", ch, ch)
    attn = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))
    for o, s in attn:
        _pair(t, f"{side}.mid_block.attentions.0.{o}", f"{side}.mid.attn_1.{s}")
    _vae_resnet(t, f"{side}.mid_block.resnets.1", f"{side}.mid.block_2", ch, ch)


def _vae_side_ends(t: dict, side: str) -> None:
    _pair(t, f"{side}.conv_in", f"{side}.conv_in")
    _pair(t, f"{side}.conv_norm_out", f"{side}.norm_out")
    _pair(t, f"{side}.conv_out", f"{side}.conv_out")


def vae_to_sd(cfg: AutoencoderConfig) -> dict[str, str]:
    """Our VAE key -> full SD key. The decoder's ``up_blocks.k`` is SD's ``up.(L-1-k)``."""
    t: dict[str, str] = {}
    widths = [cfg.base_channels * m for m in cfg.channel_mult]
    last = len(widths) - 1
    ch = widths[0]
    for i, out in enumerate(widths):  # encoder: num_res_blocks per level
        for j in range(cfg.num_res_blocks):
            _vae_resnet(t, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", ch, out)
            ch = out
        if i != last:
            _pair(t, f"encoder.down_blocks.{i}.downsamplers.0.conv", f"encoder.down.{i}.downsample.conv")
    _vae_mid(t, "encoder", ch)
    _vae_mid(t, "decoder", ch)
    for k, i in enumerate(reversed(range(len(widths)))):  # decoder: one more resnet per level
        for j in range(cfg.num_res_blocks + 1):
            _vae_resnet(t, f"decoder.up_blocks.{k}.resnets.{j}", f"decoder.up.{i}.block.{j}", ch, widths[i])
            ch = widths[i]
        if i != 0:
            _pair(t, f"decoder.up_blocks.{k}.upsamplers.0.conv", f"decoder.up.{i}.upsample.conv")
    _vae_side_ends(t, "encoder")
    _vae_side_ends(t, "decoder")
    _pair(t, "quant_conv", "quant_conv")
    _pair(t, "post_quant_conv", "post_quant_conv")
    return {k: SD_VAE + v for k, v in t.items()}


def linear_to_conv1x1(w: Tensor) -> Tensor:
    """VAE attention weight, ours -> SD. Shapes: [C, C] -> [C, C, 1, 1]."""
    return w[:, :, None, None] if w.ndim == 2 else w


def conv1x1_to_linear(w: Tensor) -> Tensor:
    """VAE attention weight, SD (or old diffusers Conv1d) -> ours. Shapes: [C, C, 1(, 1)] -> [C, C]."""
    return w.flatten(1) if w.ndim > 2 else w


# --- text encoder --------------------------------------------------------------------------

def text_to_sd(cfg: TextEncoderConfig) -> dict[str, str]:
    """Our text-encoder key -> full SD key (SD keeps transformers' names under a prefix)."""
    names = ["embeddings.token_embedding.weight", "embeddings.position_embedding.weight"]
    layer = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
             "layer_norm1", "mlp.fc1", "mlp.fc2", "layer_norm2")
    for i in range(cfg.layers):
        names += [f"encoder.layers.{i}.{n}.{p}" for n in layer for p in ("weight", "bias")]
    names += ["final_layer_norm.weight", "final_layer_norm.bias"]
    return {k: SD_TEXT + k for k in names}


# --- whole checkpoints ---------------------------------------------------------------------

def sd_table(cfg: ModelConfig) -> dict[str, str]:
    """Our prefixed key (``unet.conv_in.weight``) -> SD key, for the whole model."""
    table: dict[str, str] = {}
    for part, sub in (("unet", unet_to_sd(cfg.unet)), ("vae", vae_to_sd(cfg.vae)),
                      ("text_encoder", text_to_sd(cfg.text))):
        table.update({OURS_PREFIX[part] + k: v for k, v in sub.items()})
    return table


def canonical_sd_key(key: str) -> str | None:
    """The standard spelling of an SD key, or None for a known non-weight entry to discard."""
    if key in SD_NON_WEIGHT_KEYS or key.startswith(SD_NON_WEIGHT_PREFIXES):
        return None
    if key.startswith(SD_TEXT_OLD) and key.endswith("embeddings.position_ids"):
        return None  # an index buffer, not a weight
    if key.startswith(SD_TEXT_OLD) and not key.startswith(SD_TEXT):
        rest = key[len(SD_TEXT_OLD):]
        if rest.split(".")[0] in ("embeddings", "encoder", "final_layer_norm"):
            return SD_TEXT + rest
    return key


def unwrap_sd(state: Mapping) -> Mapping:
    """A ``.ckpt`` holds its weights under ``state_dict``; a safetensors file holds them directly."""
    inner = state.get("state_dict")
    return inner if isinstance(inner, Mapping) else state


def _is_vae_attention(ours_key: str) -> bool:
    prefix = OURS_PREFIX["vae"]
    return ours_key.startswith(prefix) and ours_key[len(prefix):] in VAE_ATTENTION_WEIGHTS


def ours_to_sd(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """Our prefixed state dict -> SD single-file names (VAE attention reshaped to 1x1 convs)."""
    table, out = sd_table(cfg), {}
    for key, w in state.items():
        out[table.get(key, key)] = linear_to_conv1x1(w) if _is_vae_attention(key) else w
    return out


def sd_to_ours(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, Tensor]:
    """SD single file (or ``.ckpt`` dict) -> our prefixed names.

    Known non-weight keys (schedule buffers, ``model_ema.*``, text ``position_ids``) are dropped;
    the non-EMA ``model.diffusion_model.*`` weights are used. Unknown keys pass through unchanged.
    """
    reverse = {sd: ours for ours, sd in sd_table(cfg).items()}
    out: dict[str, Tensor] = {}
    for key, w in unwrap_sd(state).items():
        canon = canonical_sd_key(key)
        if canon is None:
            continue
        ours = reverse.get(canon, key)
        if _is_vae_attention(ours):
            w = conv1x1_to_linear(w)
        if ours in out:
            raise ValueError(f"SD checkpoint holds {ours!r} twice (key {key!r} is a second spelling)")
        out[ours] = w
    return out


def _require_variational(cfg: ModelConfig) -> None:
    if not cfg.vae.variational:
        raise ValueError("diffusers' AutoencoderKL is always variational; a plain AE (variational=False) "
                         "has no diffusers equivalent")


def ours_to_diffusers(state: Mapping[str, Tensor], cfg: ModelConfig) -> dict[str, dict[str, Tensor]]:
    """Our prefixed state dict -> ``{"unet", "vae", "text_encoder"}`` diffusers-folder state dicts.

    The text encoder gets ``text_model.`` back (the on-disk form of SD pipeline folders).
    """
    _require_variational(cfg)
    parts: dict[str, dict[str, Tensor]] = {part: {} for part in OURS_PREFIX}
    for key, w in state.items():
        part = next((p for p, prefix in OURS_PREFIX.items() if key.startswith(prefix)), None)
        if part is None:
            raise ValueError(f"key {key!r} has none of the prefixes {sorted(OURS_PREFIX.values())}")
        name = key[len(OURS_PREFIX[part]):]
        parts[part][DIFFUSERS_TEXT + name if part == "text_encoder" else name] = w
    return parts


def _modern_vae_key(key: str, w: Tensor) -> tuple[str, Tensor]:
    """diffusers' pre-0.14 VAE attention names (query/key/value/proj_attn) -> today's."""
    head, _, leaf = key.rpartition(".")  # leaf: weight | bias
    prefix, _, layer = head.rpartition(".")
    if prefix.endswith("mid_block.attentions.0") and layer in _OLD_VAE_ATTENTION:
        key = f"{prefix}.{_OLD_VAE_ATTENTION[layer]}.{leaf}"
    if key in VAE_ATTENTION_WEIGHTS:
        w = conv1x1_to_linear(w)
    return key, w


def diffusers_to_ours(parts: Mapping[str, Mapping[str, Tensor]], cfg: ModelConfig) -> dict[str, Tensor]:
    """diffusers-folder state dicts (``unet``, ``vae``, ``text_encoder``) -> our prefixed names.

    Accepts old VAE attention names, text keys with or without ``text_model.``, and drops the text
    ``position_ids`` buffer. Other unknown keys pass through (prefixed) for the strict check.
    """
    _require_variational(cfg)
    unknown = set(parts) - set(OURS_PREFIX)
    if unknown:
        raise ValueError(f"unknown diffusers parts {sorted(unknown)}; expected {sorted(OURS_PREFIX)}")
    out: dict[str, Tensor] = {}
    for part, sub in parts.items():
        for key, w in sub.items():
            if part == "vae":
                key, w = _modern_vae_key(key, w)
            if part == "text_encoder":
                key = key.removeprefix(DIFFUSERS_TEXT)
                if key == "embeddings.position_ids":
                    continue
            out[OURS_PREFIX[part] + key] = w
    return out

"""Architecture configs: frozen dataclasses, one per network, and the presets.

A top-level model takes exactly one of these; leaf layers take explicit sizes.
Configs serialise to plain JSON (``to_dict`` / ``from_dict``) and travel inside our
checkpoints' safetensors metadata.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field

DEFAULT_CFG_SCALE = 7.0  # A1111's guidance scale, for models that do not name their own (ModelConfig.cfg_scale)


class PredictionType(str, enum.Enum):
    EPSILON = "epsilon"
    V = "v_prediction"


@dataclass(frozen=True)
class AutoencoderConfig:
    """AutoencoderKL. ``variational=False`` gives a plain AE (deterministic bottleneck, no KL)."""

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # one level per entry; downsample between levels
    num_res_blocks: int = 2
    z_channels: int = 4
    norm_groups: int = 32
    variational: bool = True
    scale_factor: float = 0.18215  # latents are multiplied by this before diffusion

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class UNetConfig:
    """SD 1.x-style UNet. Attention heads: a fixed ``num_heads`` per transformer (SD 1), or, when ``head_dim``
    is set, as many heads of that size as the width allows (SD 2); ``head_dim`` wins when both are set."""

    in_channels: int = 4  # 9 for inpainting models (latent + mask + masked-image latent)
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (True, True, True, False)  # SD 1: attention at downsample 1, 2, 4
    num_heads: int | None = 8
    head_dim: int | None = None
    transformer_depth: int = 1
    context_dim: int = 768
    use_linear_projection: bool = False  # SD 2 style proj_in/proj_out
    num_classes: int | None = None  # optional class embedding added to the timestep embedding
    norm_groups: int = 32

    def __post_init__(self):
        if self.num_heads is None and self.head_dim is None:
            raise ValueError("UNetConfig: set num_heads or head_dim")
        if len(self.attention_levels) != len(self.channel_mult):
            raise ValueError(
                f"UNetConfig: attention_levels has {len(self.attention_levels)} entries, "
                f"channel_mult has {len(self.channel_mult)}"
            )

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    def heads_for(self, channels: int) -> int:
        """Number of attention heads in a transformer of ``channels`` width."""
        if self.head_dim is None:
            return self.num_heads
        if channels % self.head_dim:
            raise ValueError(f"{channels} channels are not divisible by head_dim={self.head_dim}")
        return channels // self.head_dim


@dataclass(frozen=True)
class TextEncoderConfig:
    """CLIP text tower (causal transformer, quick-GELU, final layer norm)."""

    vocab_size: int = 49408
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    max_positions: int = 77
    activation: str = "quick_gelu"  # or "gelu" (OpenCLIP ViT-H)
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class ScheduleConfig:
    """Training noise schedule (betas) and what the UNet predicts."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # linear | scaled_linear | cosine
    prediction_type: PredictionType = PredictionType.EPSILON
    # where the sampling steps go, from a diffusers folder's scheduler_config.json (honoured by the diffusers
    # conventions): "leading" | "trailing" | "linspace", None = each sampler's own default; the offset of
    # "leading" steps (SD 1.x: 1); Karras noise levels for Euler, Heun and DPM++ 2M
    timestep_spacing: str | None = None
    steps_offset: int = 1
    use_karras_sigmas: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a whole latent diffusion model."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    image_size: int = 512  # the native (training) resolution; generation defaults to it
    # the guidance scale this model was measured to draw best at; generation defaults to it (None: A1111's 7)
    cfg_scale: float | None = None

    @property
    def default_cfg_scale(self) -> float:
        """The guidance scale generation uses when none is given."""
        return DEFAULT_CFG_SCALE if self.cfg_scale is None else self.cfg_scale

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_enum_value))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(
            unet=_build(UNetConfig, d.get("unet", {})),
            vae=_build(AutoencoderConfig, d.get("vae", {})),
            text=_build(TextEncoderConfig, d.get("text", {})),
            schedule=_build(ScheduleConfig, d.get("schedule", {})),
            **({"image_size": int(d["image_size"])} if "image_size" in d else {}),
            **({"cfg_scale": float(d["cfg_scale"])} if d.get("cfg_scale") is not None else {}),
        )

    @classmethod
    def from_json(cls, s: str) -> "ModelConfig":
        return cls.from_dict(json.loads(s))


def _enum_value(x):
    if isinstance(x, enum.Enum):
        return x.value
    raise TypeError(f"cannot serialise {type(x).__name__}")


def _build(cls, d: dict):
    """Dataclass from a JSON dict: lists become tuples, enums are restored, unknown keys refused."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {}
    for k, v in d.items():
        if isinstance(v, list):
            v = tuple(v)
        if k == "prediction_type":
            v = PredictionType(v)
        kwargs[k] = v
    return cls(**kwargs)


# --- presets -------------------------------------------------------------------------------

SD_V1 = ModelConfig()  # the real SD 1.x sizes (v1-inference.yaml)

SHAPES_TINY = ModelConfig(
    unet=UNetConfig(
        model_channels=64,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(True, True),
        num_heads=4,
        context_dim=128,
    ),
    vae=AutoencoderConfig(base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, z_channels=4),
    text=TextEncoderConfig(width=128, layers=4, heads=4, mlp_dim=512),
    image_size=32,
)

PRESETS = {"sd_v1": SD_V1, "shapes_tiny": SHAPES_TINY}

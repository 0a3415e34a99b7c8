"""Architecture configs: JSON round trips (they travel inside checkpoints), and every impossible config refused."""
import json

import pytest

from nanoldm.config import PRESETS, SD_V1, SHAPES_TINY, ModelConfig, PredictionType, ScheduleConfig, UNetConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = PRESETS[name]
    back = ModelConfig.from_json(config.to_json())
    assert back == config and isinstance(back.unet.channel_mult, tuple)
    assert json.loads(config.to_json()) == config.to_dict()


def test_prediction_type_is_restored_as_its_enum():
    config = ModelConfig(schedule=ScheduleConfig(prediction_type=PredictionType.V))
    d = config.to_dict()
    assert d["schedule"]["prediction_type"] == "v_prediction"
    assert ModelConfig.from_dict(d).schedule.prediction_type is PredictionType.V


def test_missing_fields_take_defaults_and_unknown_fields_are_refused():
    assert ModelConfig.from_dict({}) == SD_V1
    assert ModelConfig.from_dict({"image_size": "64"}).image_size == 64
    with pytest.raises(ValueError, match=r"UNetConfig: unknown fields \['channels'\]"):
        ModelConfig.from_dict({"unet": {"channels": 3}})


def test_sd_v1_sizes():
    """The numbers of SD 1.x's v1-inference.yaml."""
    assert (SD_V1.unet.model_channels, SD_V1.unet.channel_mult, SD_V1.unet.context_dim) == (320, (1, 2, 4, 4), 768)
    assert SD_V1.unet.time_embed_dim == 1280 and SD_V1.vae.downsample_factor == 8 and SD_V1.vae.scale_factor == 0.18215
    assert (SD_V1.schedule.beta_start, SD_V1.schedule.beta_end) == (0.00085, 0.012)
    assert SHAPES_TINY.vae.downsample_factor == 4 and SHAPES_TINY.image_size == 32


def test_attention_heads_by_count_or_by_size():
    assert UNetConfig(num_heads=8).heads_for(640) == 8  # SD 1: a fixed number of heads
    assert UNetConfig(num_heads=None, head_dim=64).heads_for(640) == 10  # SD 2: heads of 64 channels
    with pytest.raises(ValueError, match="not divisible by head_dim=64"):
        UNetConfig(num_heads=None, head_dim=64).heads_for(100)


def test_impossible_unet_configs_are_refused():
    with pytest.raises(ValueError, match="set num_heads or head_dim"):
        UNetConfig(num_heads=None, head_dim=None)
    with pytest.raises(ValueError, match="attention_levels has 2 entries, channel_mult has 4"):
        UNetConfig(attention_levels=(True, False))

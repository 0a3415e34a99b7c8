"""Tiny configs shared by the tests: SD 1.x topology at a size that runs in milliseconds on a CPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nanoldm.config import AutoencoderConfig, ModelConfig, TextEncoderConfig, UNetConfig

TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=2, attention_levels=(True, False),
                       num_heads=2, context_dim=32, norm_groups=8)
TINY_UNET_LINEAR = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(True, True),
                              num_heads=None, head_dim=8, context_dim=32, norm_groups=8,
                              use_linear_projection=True)
TINY_UNET_INPAINT = UNetConfig(in_channels=9, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                               attention_levels=(True, True), num_heads=2, context_dim=32, norm_groups=8)
TINY_VAE = AutoencoderConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, z_channels=4, norm_groups=8)
TINY_TEXT = TextEncoderConfig(width=32, layers=2, heads=4, mlp_dim=64)
# native size 32: a test that gives no width/height generates at 32x32, not at SD's 512 (minutes on a CPU)
TINY = ModelConfig(unet=TINY_UNET, vae=TINY_VAE, text=TINY_TEXT, image_size=32)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    from nanoldm.text.tokenizer import CLIPTokenizer

    return CLIPTokenizer.default()


@pytest.fixture
def tiny_model_16px(tokenizer):
    """A random TINY LatentDiffusion that trains and generates at 16x16."""
    from nanoldm.model import LatentDiffusion

    torch.manual_seed(0)
    return LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=16), tokenizer=tokenizer)

"""nanoldm: latent diffusion (Stable Diffusion), readable end to end.

Glossary of tensor names and shapes used across the package:

    x, image     (B, 3, H, W)        pixels in [-1, 1]
    z, latent    (B, C_z, h, w)      VAE latents, h = H / f, w = W / f (f = 2^(levels-1): 4, 8 or 16)
                                     unscaled; diffusion works on z * scale_factor (SD 1.x: 0.18215)
    moments      (B, 2 C_z, h, w)    encoder output: posterior mean and log-variance
    x_t, z_t     (B, C, h, w)        noised latents at timestep t
    t            (B,) or (1,)        integer (or float) timesteps in [0, T); one value serves the whole batch
    emb          (B or 1, 4*model_ch) timestep (+ class) embedding inside the UNet
    input_ids    (B, 77)             CLIP token ids: BOS, tokens, EOS, EOS padding
    context      (B, L, D)           cross-attention keys/values source: text hidden states, class/layout tokens
    eps          (B, C, h, w)        the noise the UNet predicts (or v, for v-prediction)
"""
from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.config import (SD_V1, SHAPES_TINY, AutoencoderConfig, ModelConfig, ScheduleConfig, TextEncoderConfig,
                            UNetConfig)
from nanoldm.layers.frozen import frozen_weights
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.pipeline import Pipeline, load_pipeline
from nanoldm.text.clip import CLIPTextEncoder
from nanoldm.text.tokenizer import CLIPTokenizer
from nanoldm.unet.unet import UNet

__all__ = [
    "AutoencoderConfig", "AutoencoderKL", "CLIPTextEncoder", "CLIPTokenizer", "CheckpointError", "GenerateOptions",
    "LatentDiffusion", "ModelConfig", "ModelParts", "Pipeline", "SD_V1", "SHAPES_TINY", "ScheduleConfig",
    "TextEncoderConfig", "UNet", "UNetConfig", "frozen_weights", "load_model", "load_pipeline", "save_model",
]

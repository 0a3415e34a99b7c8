"""ModelParts (what pipeline functions get of a model) and the one sampling path (sample_latents), on tiny
random networks."""
import dataclasses

import pytest
import torch

from nanoldm.config import ModelConfig
from nanoldm.diffusion.denoiser import Conditioning
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import PIXEL_ROUNDING
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import conditioning, decode, sample_contexts, sample_latents
from nanoldm.rng import ImageNoise
from nanoldm.text.encode import encode_prompt_pair
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY, TINY_TEXT, TINY_UNET_INPAINT, TINY_VAE


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return Pipeline(LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=16),
                                                tokenizer=CLIPTokenizer.default()))


def test_parts_hold_the_models_facts(pipe):
    parts = pipe.parts()
    cfg = pipe.model.config
    assert parts.unet is pipe.unet and parts.vae is pipe.vae and parts.text_encoder is pipe.text_encoder
    assert parts.schedule is pipe.schedule and parts.prediction_type is cfg.schedule.prediction_type
    assert (parts.scale_factor, parts.latent_factor) == (cfg.vae.scale_factor, cfg.vae.downsample_factor)
    assert (parts.latent_channels, parts.concat_channels, parts.image_size) == (4, 0, 16)
    assert (parts.device, parts.dtype) == (torch.device("cpu"), torch.float32) and not parts.inpainting
    assert parts.latent_size(16, 32) == (8, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parts.image_size = 32


def test_parts_of_an_inpainting_model_and_their_noise():
    model = LatentDiffusion.from_config(ModelConfig(unet=TINY_UNET_INPAINT, vae=TINY_VAE, text=TINY_TEXT, image_size=32))
    parts = ModelParts.from_model(model)
    assert parts.inpainting and parts.concat_channels == 5
    with pytest.raises(ValueError, match="this is an inpainting model .* use inpaint, not txt2img"):
        parts.require_plain("txt2img")
    noise = parts.noise([3, 4], 16, 8)
    assert torch.equal(noise(), ImageNoise([3, 4], (4, 8, 4))())  # the seeded noise of rng.py, latent-sized


def test_the_one_path_is_what_txt2img_runs(pipe):
    """sample_latents + decode, called by hand, give txt2img's pixels; sample_contexts gives them from contexts."""
    opts = GenerateOptions(prompt="a red circle", sampler="Euler", steps=3, seed=5, width=16, height=16)
    (want,) = pipe.generate(opts, progress=False)
    parts = pipe.parts()
    latents = sample_latents(parts, opts, parts.noise([5], 16, 16), conditioning(parts, opts))
    assert tensor_to_pil(decode(parts, latents), PIXEL_ROUNDING[opts.like])[0].tobytes() == want.tobytes()
    cond, uncond = encode_prompt_pair(parts.text_encoder, parts.tokenizer, "a red circle", "")
    (got,) = tensor_to_pil(sample_contexts(parts, opts, cond, uncond, [5]), PIXEL_ROUNDING[opts.like])
    assert got.tobytes() == want.tobytes()


def test_strength_zero_returns_the_init_latents(pipe):
    parts = pipe.parts()
    init = torch.randn(1, 4, 8, 8)
    cond = Conditioning(context=torch.zeros(1, 77, 32))
    zero = GenerateOptions(steps=4, strength=0.0, sampler="Euler")
    assert sample_latents(parts, zero, parts.noise([0], 16, 16), cond, init_latents=init) is init
    half = GenerateOptions(steps=4, strength=0.5, sampler="Euler")
    out = sample_latents(parts, half, parts.noise([0], 16, 16), cond, init_latents=init)
    assert out.shape == init.shape and not torch.equal(out, init)

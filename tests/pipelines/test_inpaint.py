"""Inpainting: the unmasked region is kept, the masked region is generated; both kinds of model."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.config import ModelConfig
from nanoldm.model import LatentDiffusion
from nanoldm.conditioning.mask import latent_mask
from nanoldm.pipelines.images import fill_masked, pil_to_tensor, tensor_to_pil
from nanoldm.pipelines.img2img import encode_images
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import decode
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY, TINY_TEXT, TINY_UNET_INPAINT, TINY_VAE

SIZE = 32


def pipeline(cfg: ModelConfig) -> Pipeline:
    """A model whose native size is the test image's, so nothing is resized."""
    torch.manual_seed(0)
    return Pipeline(LatentDiffusion.from_config(dataclasses.replace(cfg, image_size=SIZE),
                                                tokenizer=CLIPTokenizer.default()))


@pytest.fixture(scope="module")
def image_and_mask():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 8:24] = 255
    return image, Image.fromarray(mask)


@pytest.mark.parametrize("cfg", [TINY, ModelConfig(unet=TINY_UNET_INPAINT, vae=TINY_VAE, text=TINY_TEXT, image_size=32)],
                         ids=["ordinary-model", "inpainting-model"])
@pytest.mark.parametrize("sampler", ["Euler a", "DDIM"])
def test_unmasked_region_is_kept_and_masked_region_regenerated(cfg, sampler, image_and_mask):
    image, mask = image_and_mask
    (out,) = pipeline(cfg).inpaint(image, mask, "a square", seed=1, steps=4, sampler=sampler, progress=False)
    got, orig, m = np.asarray(out), np.asarray(image), np.asarray(mask) > 0
    assert np.array_equal(got[~m], orig[~m])
    assert np.abs(got[m].astype(int) - orig[m]).mean() > 5
    assert "Denoising strength: " in out.info["parameters"]


def test_without_overlay_the_model_decodes_every_pixel(image_and_mask):
    image, mask = image_and_mask
    pipe = pipeline(ModelConfig(unet=TINY_UNET_INPAINT, vae=TINY_VAE, text=TINY_TEXT, image_size=32))
    kept, raw = (pipe.inpaint(image, mask, "a square", seed=1, steps=3, overlay=o, progress=False)[0]
                 for o in (True, False))
    got, m = np.asarray(raw), np.asarray(mask) > 0
    assert np.array_equal(got[m], np.asarray(kept)[m])  # the same generation inside the mask
    assert not np.array_equal(got[~m], np.asarray(image)[~m])  # outside it: the model's own (VAE) pixels


def test_strength_zero_runs_no_step(image_and_mask):
    """Nothing is sampled: inside the mask comes the VAE round trip of the image (one posterior draw)."""
    image, mask = image_and_mask
    pipe = pipeline(TINY)
    (out,) = pipe.inpaint(image, mask, "x", seed=1, steps=4, strength=0.0, progress=False)
    parts = pipe.parts()
    init = encode_images(parts, pil_to_tensor([image], image.size), parts.noise([1], *image.size))
    (want,) = tensor_to_pil(decode(parts, init), "truncate")  # A1111's 8 bits, the default conventions
    m = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(out)[m], np.asarray(want)[m])


@pytest.mark.parametrize("fill", [0, 2, 3], ids=["fill", "latent noise", "latent nothing"])
def test_masked_content_is_what_the_masked_region_starts_from(image_and_mask, fill):
    """A1111's "Masked content", seen with strength 0 (nothing sampled): 0 "fill" encodes the image with the hole
    filled from its surroundings, 2 "latent noise" puts the seed's fresh draw in the masked latents, 3 "latent
    nothing" zeros there; outside the mask the image is pasted back."""
    image, mask = image_and_mask
    pipe = pipeline(TINY)
    (out,) = pipe.inpaint(image, mask, "x", seed=1, steps=4, strength=0.0, inpainting_fill=fill, progress=False)
    parts = pipe.parts()
    source = fill_masked(image, mask) if fill == 0 else image
    init = encode_images(parts, pil_to_tensor([source], image.size), parts.noise([1], *image.size))
    small = latent_mask(pil_to_tensor([mask.convert("RGB")], mask.size)[:, :1] > 0, init.shape[-2:]).to(init)
    if fill == 2:
        init = init * (1 - small) + parts.noise([1], *image.size)() * small
    elif fill == 3:
        init = init * (1 - small)
    (want,) = tensor_to_pil(decode(parts, init), "truncate")
    m = np.asarray(mask) > 0
    assert np.array_equal(np.asarray(out)[m], np.asarray(want)[m])
    assert np.array_equal(np.asarray(out)[~m], np.asarray(image)[~m])
    with pytest.raises(ValueError, match="inpainting fill must be 0..3"):
        pipe.inpaint(image, mask, "x", steps=1, inpainting_fill=4, progress=False)

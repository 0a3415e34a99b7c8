"""The latent cache: encoded once, reused, invalidated by a changed VAE, faithful to the posterior."""

import pytest
import torch

from nanoldm.data.latents import build_latent_cache, cache_key, load_or_build
from nanoldm.data.sources import shapes_images
from tests.conftest import TINY



@pytest.fixture
def model(tiny_model_16px):
    return tiny_model_16px.eval()


@pytest.fixture(scope="module")
def data():
    images = shapes_images(12, 16, seed=0)
    return images.pixels, images.captions


def count_encodes(model, monkeypatch) -> list:
    calls, encode = [], model.vae.encode
    monkeypatch.setattr(model.vae, "encode", lambda x: calls.append(len(x)) or encode(x))
    return calls


def test_written_once_then_reused(model, data, tmp_path, monkeypatch):
    pixels, captions = data
    calls = count_encodes(model, monkeypatch)
    first, path = load_or_build(pixels, captions, model, tmp_path)
    assert path.exists() and sum(calls) == len(pixels)
    second, path2 = load_or_build(pixels, captions, model, tmp_path)
    assert path2 == path and sum(calls) == len(pixels)  # no VAE call the second time
    for k, v in first.tensors().items():
        assert torch.equal(v, second.tensors()[k]), k


def test_changed_vae_or_data_invalidates(model, data, tmp_path, monkeypatch):
    pixels, captions = data
    _, path = load_or_build(pixels, captions, model, tmp_path)
    key = cache_key(pixels, captions, model)
    assert cache_key(pixels, captions[:-1] + ["a blue circle"], model) != key
    with torch.no_grad():
        model.vae.decoder.conv_out.bias.add_(1e-3)  # even the decoder: the weights are hashed whole
    calls = count_encodes(model, monkeypatch)
    _, path2 = load_or_build(pixels, captions, model, tmp_path)
    assert path2 != path and sum(calls) == len(pixels)


def test_posterior_and_captions(model, data):
    pixels, captions = data
    cache = build_latent_cache(pixels, captions, model)
    assert cache.mean.shape == (12, 4, 8, 8) and (cache.std > 0).all()
    posterior = model.vae.encode(pixels[:2].float() / 127.5 - 1.0)
    scale = TINY.vae.scale_factor
    torch.testing.assert_close(cache.mean[:2], posterior.mean.detach() * scale)
    torch.testing.assert_close(cache.std[:2], posterior.std.detach() * scale)
    g = torch.Generator().manual_seed(0)
    z = cache.latents(torch.tensor([0, 1]), g)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, cache.mean[:2] + cache.std[:2] * eps)
    assert len(cache.contexts) == len(set(captions))
    with torch.no_grad():
        ids = model.tokenizer([captions[3], ""])  # plain captions: text_encoder(tokenizer(caption))
        expected = model.text_encoder(ids)
    torch.testing.assert_close(cache.context(torch.tensor([3]))[0], expected[0])
    torch.testing.assert_close(cache.empty[0], expected[1])

"""Our AutoencoderKL against diffusers' with the same weights; the posterior's mathematics; the plain AE."""
import math

import pytest
import torch

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.autoencoder.distribution import DiagonalGaussian
from nanoldm.config import SD_V1, AutoencoderConfig
from tests.conftest import TINY_VAE

from tests.reference import reference_vae




@pytest.mark.parametrize("mult", [(1, 2), (1, 2, 2), (1, 1, 2, 2), (1, 1, 1, 2, 2)], ids=["f2", "f4", "f8", "f16"])
def test_matches_diffusers(mult):
    cfg = AutoencoderConfig(**{**TINY_VAE.__dict__, "channel_mult": mult})
    ref, ours = reference_vae(cfg), AutoencoderKL(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        want = ref.encode(x).latent_dist
        got = ours.encode(x)
        assert got.mean.shape == (2, 4, 32 // cfg.downsample_factor, 32 // cfg.downsample_factor)
        assert (got.mean - want.mean).abs().max() <= 1e-4
        assert (got.logvar - want.logvar).abs().max() <= 1e-4
        z = torch.randn_like(got.mean)
        assert (ours.decode(z) - ref.decode(z).sample).abs().max() <= 1e-4


def test_sd_v1_layout_matches_diffusers_on_meta():
    with torch.device("meta"):
        ours, ref = AutoencoderKL(SD_V1.vae), reference_vae(SD_V1.vae)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert SD_V1.vae.downsample_factor == 8


def test_posterior_sample_statistics_and_kl():
    mean = torch.randn(1, 4, 16, 16)
    logvar = torch.full_like(mean, math.log(0.25))
    post = DiagonalGaussian(torch.cat([mean, logvar], 1))
    draws = torch.stack([post.sample(torch.Generator().manual_seed(i)) for i in range(400)])
    assert (draws.mean(0) - mean).abs().mean() < 0.03
    assert abs(draws.std(0).mean().item() - 0.5) < 0.02
    # KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - 1 - log s^2), summed
    want = 0.5 * (mean ** 2 + 0.25 - 1 - math.log(0.25)).sum()
    torch.testing.assert_close(post.kl(), want.reshape(1))
    assert torch.equal(post.mode(), mean)


def test_sample_is_reproducible_from_a_generator():
    post = DiagonalGaussian(torch.randn(2, 8, 4, 4))
    a = post.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, post.sample(torch.Generator().manual_seed(3)))
    assert not torch.equal(a, post.sample(torch.Generator().manual_seed(4)))


def test_plain_autoencoder_is_deterministic_and_kl_free():
    cfg = AutoencoderConfig(**{**TINY_VAE.__dict__, "variational": False})
    ae = AutoencoderKL(cfg).eval()
    assert ae.encoder.conv_out.out_channels == cfg.z_channels
    x = torch.rand(3, 3, 16, 16)
    post = ae.encode(x)
    assert torch.equal(post.sample(torch.Generator().manual_seed(0)), post.mode())
    assert torch.equal(post.kl(), torch.zeros(3))
    x_hat, _ = ae(x)
    assert x_hat.shape == x.shape

"""A1111's own DDIM, PLMS and UniPC (its "CompVis" samplers): on the small SD 1.x model of ``test_a1111``, our images
equal those of A1111's algorithm (``a1111_timesteps_reference``, in A1111's VP variables) to >= 60 dB PSNR as
8-bit truncated pixels, batch 2; img2img latents likewise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoldm.options import GenerateOptions
from nanoldm.pipelines.sampling import conditioning, sample_latents, seeded_noise
from nanoldm.samplers.a1111_timesteps import a1111_timesteps
from tests.samplers.a1111_reference import a1111_pixels
from tests.samplers.a1111_timesteps_reference import a1111_compvis_latents, get_timesteps
from tests.samplers.test_a1111 import CFG, NEGATIVE, PROMPT, SEED, SIZE, psnr


def _reference(pipe, sampler, steps, **kw):
    parts = pipe.parts()
    cond = conditioning(parts, GenerateOptions(prompt=PROMPT, negative_prompt=NEGATIVE, cfg_scale=CFG, batch_size=2))
    h = SIZE // parts.latent_factor
    return a1111_compvis_latents(parts.unet, parts.schedule.alphas_cumprod, sampler, steps, [SEED, SEED + 1],
                                 (parts.latent_channels, h, h), cond.context, cond.uncond_context, CFG, **kw)


def _ours(pipe, sampler, steps, **kw):
    return pipe.txt2img(PROMPT, NEGATIVE, sampler=sampler, steps=steps, seed=SEED, batch_size=2, cfg_scale=CFG,
                        width=SIZE, height=SIZE, progress=False, **kw)


def _array(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


def _pixels(pipe, latents):
    with torch.no_grad():
        return a1111_pixels(pipe.parts().vae.decode(latents / pipe.parts().scale_factor))


@pytest.mark.parametrize("steps", [1, 7, 10, 20, 30])
def test_a1111_timesteps(steps):
    """``get_timesteps``: 1 + k * (1000 // steps), clipped; 30 steps give 31 timesteps, 1 step one."""
    assert torch.equal(a1111_timesteps(steps), get_timesteps(steps))


@pytest.mark.parametrize("sampler, steps, eta", [("DDIM", 10, 0.0), ("DDIM", 30, 0.0), ("DDIM", 20, 0.5),
                                                 ("PLMS", 10, 0.0), ("PLMS", 20, 0.0), ("UniPC", 10, 0.0),
                                                 ("UniPC", 30, 0.0)])
def test_txt2img_gives_a1111s_image(pipe, sampler, steps, eta):
    images = _ours(pipe, sampler, steps, eta=eta)
    got = _array(images)
    want = _pixels(pipe, _reference(pipe, sampler, steps, eta=eta))
    assert psnr(got, want) >= 60, psnr(got, want)
    params = images[0].info["parameters"]
    assert f"Sampler: {sampler}," in params and "Schedule type" not in params
    assert ("Eta DDIM: 0.5" in params) == (eta == 0.5)


@pytest.mark.parametrize("sampler, strength", [("DDIM", None), ("PLMS", None), ("UniPC", None), ("DDIM", 0.5),
                                               ("PLMS", 0.75), ("DDIM", 0.3), ("UniPC", 0.5), ("UniPC", 0.75)])
def test_latents_equal_a1111s(pipe, sampler, strength):
    """Latents before the VAE, where the last step's scaling back to the VP latent at t = 1 shows (it is below 8-bit
    pixels). img2img: the image is noised one timestep above the first one run (A1111's off-by-one)."""
    parts = pipe.parts()
    opts = GenerateOptions(prompt=PROMPT, negative_prompt=NEGATIVE, cfg_scale=CFG, batch_size=2, seed=SEED,
                           sampler=sampler, steps=20, strength=strength or 0.75, eta=0.5, width=SIZE, height=SIZE)
    init = None
    if strength is not None:
        init = torch.randn(2, parts.latent_channels, SIZE // 4, SIZE // 4, generator=torch.Generator().manual_seed(3))
    noise, _ = seeded_noise(parts, opts, SIZE, SIZE)
    got = sample_latents(parts, opts, noise, conditioning(parts, opts), init_latents=init)
    want = _reference(pipe, sampler, 20, init_latents=init, strength=opts.strength, eta=0.5)
    error = float((got - want).norm() / want.norm())
    assert error < 2e-5, error  # float32 arithmetic in other orders (~2e-6); leaving out the t = 1 scaling: 8.5e-4


def test_the_60_db_bar_has_teeth(pipe):
    """What "DDIM" ran before under A1111's conventions (diffusers' DDIM: one more step, to t = 0, rounded pixels)
    misses the bar, and so does PLMS against DDIM."""
    ddim = _array(_ours(pipe, "DDIM", 10))
    assert psnr(ddim, _array(_ours(pipe, "DDIM", 10, like="diffusers"))) < 60
    assert psnr(ddim, _array(_ours(pipe, "PLMS", 10))) < 60
    assert psnr(ddim, _array(_ours(pipe, "UniPC", 10))) < 60


def test_unipc_with_fewer_steps_than_its_order_lowers_the_order(pipe):
    """img2img at strength 0.1 of 20 steps runs UniPC for 2 steps: A1111 stops on an assertion there; nanoldm
    lowers the order to the steps it has."""
    parts = pipe.parts()
    opts = GenerateOptions(prompt=PROMPT, sampler="UniPC", steps=20, strength=0.1, width=SIZE, height=SIZE, seed=SEED)
    init = torch.zeros(1, parts.latent_channels, SIZE // 4, SIZE // 4)
    noise, _ = seeded_noise(parts, opts, SIZE, SIZE)
    got = sample_latents(parts, opts, noise, conditioning(parts, opts), init_latents=init)
    assert got.shape == init.shape and torch.isfinite(got).all() and not torch.equal(got, init)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS", "UniPC"])
def test_discard_penultimate_sigma_adds_a_timestep_as_a1111s_get_timesteps_does(pipe, sampler):
    """For these A1111 only counts one step more (``CompVisSampler.get_timesteps``): the image of steps + 1."""
    options = dict(steps=10, seed=SEED, batch_size=2, cfg_scale=CFG, width=SIZE, height=SIZE, progress=False)
    with_it = pipe.txt2img(PROMPT, NEGATIVE, sampler=sampler, discard_penultimate_sigma=True, **options)
    one_more = pipe.txt2img(PROMPT, NEGATIVE, sampler=sampler, **{**options, "steps": 11})
    assert np.array_equal(_array(with_it), _array(one_more))
    assert "Discard penultimate sigma: True" in with_it[0].info["parameters"]

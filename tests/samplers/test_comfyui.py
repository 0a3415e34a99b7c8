"""``like="comfyui"``: ComfyUI's KSampler names, schedulers, batch noise and starting scale. On the small SD 1.x
model of the A1111 tests, txt2img equals the ComfyUI reference (``comfyui_reference``) to >= 60 dB as 8-bit
truncated pixels, batch 2."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import plan
from nanoldm.pipelines.sampling import conditioning, sample_latents, seeded_noise
from nanoldm.rng import BatchNoise
from nanoldm.samplers.comfyui import COMFYUI_SAMPLERS, COMFYUI_SCHEDULERS, comfyui_img2img_sigmas, find_comfyui
from tests.samplers.a1111_reference import a1111_pixels
from tests.samplers.comfyui_reference import comfyui_txt2img_latents
from tests.samplers.test_a1111 import CFG, NEGATIVE, PROMPT, SIZE, psnr

SEED = 21


def reference_pixels(pipe, sampler: str, scheduler: str, steps: int) -> np.ndarray:
    parts = pipe.parts()
    cond = conditioning(parts, GenerateOptions(prompt=PROMPT, negative_prompt=NEGATIVE, cfg_scale=CFG, batch_size=2))
    h = SIZE // parts.latent_factor
    latents = comfyui_txt2img_latents(parts.unet, parts.schedule.alphas_cumprod, sampler, scheduler, steps, SEED,
                                      (2, parts.latent_channels, h, h), cond.context, cond.uncond_context, CFG)
    with torch.no_grad():
        return a1111_pixels(parts.vae.decode(latents / parts.scale_factor))


def our_pixels(pipe, sampler: str, scheduler: str, steps: int) -> np.ndarray:
    images = pipe.txt2img(PROMPT, NEGATIVE, sampler=sampler, scheduler=scheduler, steps=steps, seed=SEED,
                          batch_size=2, cfg_scale=CFG, width=SIZE, height=SIZE, like="comfyui", progress=False)
    return np.stack([np.asarray(im) for im in images])


@pytest.mark.parametrize("sampler", COMFYUI_SAMPLERS)
def test_every_sampler_gives_comfyuis_image(pipe, sampler):
    """Each sampler with the default workflow's scheduler (normal) and with karras, at 10 steps."""
    for scheduler in ("normal", "karras"):
        got, want = our_pixels(pipe, sampler, scheduler, 10), reference_pixels(pipe, sampler, scheduler, 10)
        assert psnr(got, want) >= 60, (sampler, scheduler, psnr(got, want))


@pytest.mark.parametrize("scheduler", COMFYUI_SCHEDULERS)
def test_every_scheduler_gives_comfyuis_image(pipe, scheduler):
    for sampler, steps in (("euler_ancestral", 10), ("dpmpp_2m", 7)):
        got, want = our_pixels(pipe, sampler, scheduler, steps), reference_pixels(pipe, sampler, scheduler, steps)
        assert psnr(got, want) >= 60, (sampler, scheduler, psnr(got, want))


OWN = ["uni_pc", "uni_pc_bh2", "ddpm", "lcm", "ipndm", "ipndm_v", "heunpp2", "deis", "res_multistep",
       "res_multistep_ancestral", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "exp_heun_2_x0",
       "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece"]
CFG_PP = ["euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
          "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp"]


@pytest.mark.parametrize("sampler", OWN + CFG_PP)
def test_comfyuis_own_samplers_give_its_latents(pipe, sampler):
    """Latents before the VAE: uni_pc stops at sigma 0.001, which 8-bit pixels cannot see (ending at 0 instead is
    ~1e-3 away), and ddpm's VP posterior step equals its sigma-space form to float32 rounding. The CFG++ forms
    step along the unguided estimate, which moves them 3-5 times more than the plain ones for the same rounding
    of the model output (measured 0.4-1.3e-5 against 0.2-0.3e-5), hence their 3e-5."""
    parts = pipe.parts()
    opts = GenerateOptions(prompt=PROMPT, negative_prompt=NEGATIVE, cfg_scale=CFG, batch_size=2, seed=SEED,
                           sampler=sampler, scheduler="karras", steps=12, width=SIZE, height=SIZE, like="comfyui")
    cond = conditioning(parts, opts)
    noise, _ = seeded_noise(parts, opts, SIZE, SIZE)
    got = sample_latents(parts, opts, noise, cond)
    h = SIZE // parts.latent_factor
    want = comfyui_txt2img_latents(parts.unet, parts.schedule.alphas_cumprod, sampler, "karras", 12, SEED,
                                   (2, parts.latent_channels, h, h), cond.context, cond.uncond_context, CFG)
    error = float((got - want).norm() / want.norm())
    assert error < (3e-5 if sampler in CFG_PP else 2e-5), error


def test_the_batch_is_one_draw_and_later_noise_comes_from_seed_plus_one():
    noise = BatchNoise(5, 3, (4, 8, 8))
    first, later = noise(), noise()
    assert torch.equal(first, torch.randn((3, 4, 8, 8), generator=torch.manual_seed(5)))
    assert torch.equal(later, torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(6)))


def test_comfyui_differs_from_a1111_where_it_should(pipe):
    """Same seed and sampler: ComfyUI's image is not A1111's (batch noise, sqrt(1 + sigma^2) start)."""
    a1111 = pipe.txt2img(PROMPT, sampler="Euler a", steps=6, seed=SEED, width=SIZE, height=SIZE, progress=False)
    comfy = pipe.txt2img(PROMPT, sampler="euler_ancestral", steps=6, seed=SEED, width=SIZE, height=SIZE,
                         like="comfyui", progress=False)
    assert psnr(np.asarray(a1111[0]), np.asarray(comfy[0])) < 40


def test_denoise_below_one_takes_the_tail_of_a_longer_schedule(pipe):
    """``KSampler.set_steps``: 10 steps at denoise 0.5 are the last 10 of a 20-step schedule."""
    spec, schedule = find_comfyui("euler", "normal")[0], pipe.parts().schedule
    tail = comfyui_img2img_sigmas(spec, "normal", schedule, 10, 0.5)
    full = comfyui_img2img_sigmas(spec, "normal", schedule, 20, 1.0)
    assert torch.equal(tail, full[-11:]) and len(comfyui_img2img_sigmas(spec, "normal", schedule, 10, 0.0)) == 1


@pytest.mark.parametrize("change, words", [
    (dict(sampler="dpmpp_4m"), "unknown ComfyUI sampler 'dpmpp_4m'; valid names: euler, euler_cfg_pp, "),
    (dict(sampler="uni_pc", steps=1), "ComfyUI's uni_pc needs at least 2 steps"),
    (dict(sampler="Restart"), "unknown ComfyUI sampler 'Restart'"),
    (dict(scheduler="Karras"), "unknown ComfyUI scheduler 'Karras'; valid names: simple"),
    (dict(subseed=3, subseed_strength=0.2), "A1111's: not with like='comfyui'"),
])
def test_what_comfyui_has_not_is_refused_by_name(pipe, change, words):
    with pytest.raises(ValueError, match=words):
        pipe.txt2img(PROMPT, width=SIZE, height=SIZE, like="comfyui", progress=False,
                     **{"sampler": "euler", "steps": 2, **change})


def test_the_start_is_scaled_by_sqrt_1_plus_sigma_squared_only_from_sigma_max(pipe):
    """``EPS.noise_scaling`` with ``max_denoise``: the pixel test above cannot see a 0.2% scale, this does."""
    schedule, noise = pipe.parts().schedule, BatchNoise(1, 1, (4, 8, 8))
    full = plan(schedule, GenerateOptions(sampler="euler", scheduler="normal", steps=10, like="comfyui"), noise)
    assert float(full.sigmas[0]) == pytest.approx(float(schedule.sigmas[-1]))
    assert float(full.start_sigma) == pytest.approx(math.sqrt(1 + float(full.sigmas[0]) ** 2), rel=1e-6)
    ddim = plan(schedule, GenerateOptions(sampler="euler", scheduler="ddim_uniform", steps=10, like="comfyui"), noise)
    assert float(ddim.start_sigma) == float(ddim.sigmas[0]) < float(schedule.sigmas[-1])
    assert full.quantize and ddim.quantize  # integer timesteps, the nearest in log sigma


def test_the_infotext_names_comfyuis_sampler_and_brings_the_image_back(pipe):
    (image,) = pipe.txt2img(PROMPT, sampler="dpmpp_2m_sde", scheduler="karras", steps=5, seed=SEED, width=SIZE,
                            height=SIZE, like="comfyui", progress=False)
    text = image.info["parameters"]
    assert "Sampler: dpmpp_2m_sde, Schedule type: karras" in text and "Conventions: comfyui" in text
    (again,) = pipe.txt2img_from_infotext(text, progress=False)
    assert np.array_equal(np.asarray(again), np.asarray(image))


def test_img2img_runs_at_any_denoise_with_every_kind_of_noise(pipe):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    for sampler in ("dpmpp_2m_sde", "euler_ancestral", "dpm_2", "uni_pc", "ddpm", "lcm"):
        for strength in (0.0, 0.5, 1.0):
            (out,) = pipe.img2img(image, PROMPT, sampler=sampler, steps=4, strength=strength, seed=SEED,
                                  like="comfyui", progress=False)
            assert out.size == image.size and "Conventions: comfyui" in out.info["parameters"]


def test_ipndm_v_weights_are_the_fixed_ones_on_an_even_grid_and_differ_elsewhere(pipe):
    """Up to order 3; ComfyUI's order-4 variable-step weights are not AB4's even on an even grid (kept)."""
    from nanoldm.samplers.ipndm import FIXED, variable_coefficients

    for order in (1, 2, 3):
        even = variable_coefficients([torch.tensor(-0.5)] * order)
        assert torch.allclose(torch.tensor([float(w) for w in even]), torch.tensor(FIXED[order]), atol=1e-6)
    assert float(variable_coefficients([torch.tensor(-0.5)] * 4)[0]) == pytest.approx(57 / 24)
    fixed, variable = our_pixels(pipe, "ipndm", "karras", 10), our_pixels(pipe, "ipndm_v", "karras", 10)
    assert psnr(fixed, variable) < 60  # the 60 dB comparison above tells them apart

"""Variation seeds, ENSD and Hires. fix: our pipeline against A1111 1.10's algorithms written from its code
(``tests/a1111_reference.py``: ``ImageRNG``, k-diffusion's Euler samplers behind ``TorchHijack``, ``sample_hr_pass``),
on a tiny random model, >= 60 dB."""
import dataclasses

import numpy as np
import pytest
import torch

from nanoldm.diffusion.denoiser import Denoiser
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.hires import hires_target, hires_txt2img, upscaler_name
from nanoldm.pipelines.infotext import hires_params, seed_params
from nanoldm.pipelines.from_infotext import InfotextWarning
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import conditioning
from nanoldm.pipelines.txt2img import txt2img
from nanoldm.pipelines.conventions import plan
from tests import a1111_reference as a1111
from tests.conftest import TINY

SIZE = 16


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    return LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=SIZE), tokenizer=tokenizer).eval()


@pytest.fixture(scope="module")
def parts(model):
    parts = ModelParts.from_model(model)
    assert parts.latent_factor == a1111.OPT_F
    return parts


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Images in [-1, 1] compared on [0, 1]."""
    mse = (((a - b) / 2) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def reference_denoiser(parts, opts: GenerateOptions, sampler: str):
    """A1111's CFG denoiser over our UNet (``CompVisDenoiser``, no quantization): the model, not the algorithm
    under test."""
    cond = conditioning(parts, opts)
    denoiser = Denoiser(parts.unet, parts.schedule, parts.prediction_type, quantize=False)
    return lambda x, sigma: denoiser(x, sigma, cond)


def get_sigmas(parts, scheduler="Automatic"):
    """A1111's txt2img schedule of a sampler (``KDiffusionSampler.get_sigmas``; tested against k-diffusion in
    tests/samplers/): the whole schedule, which the references slice themselves."""
    def sigmas(name, steps):
        opts = dataclasses.replace(BASE, sampler=name, steps=steps, scheduler=scheduler)
        return plan(parts.schedule, opts, parts.noise([0], SIZE, SIZE)).sigmas
    return sigmas


BASE = GenerateOptions(prompt="a red circle", negative_prompt="blue", steps=3, cfg_scale=5.0, seed=42, subseed=7,
                       width=SIZE, height=SIZE, batch_size=2, sampler="Euler a")

SEED_CASES = {
    "variation seed": dict(subseed_strength=0.4),
    "variation seed, resized seed": dict(subseed_strength=0.7, seed_resize_from_w=12, seed_resize_from_h=20),
    "ENSD": dict(ensd=31337),
    "variation seed and ENSD, Euler": dict(subseed_strength=1.0, ensd=5, sampler="Euler"),
}


@pytest.mark.parametrize("case", SEED_CASES)
def test_variation_seed_and_ensd_give_a1111s_image(parts, case):
    opts = dataclasses.replace(BASE, **SEED_CASES[case])
    with torch.no_grad():
        ours, seeds = txt2img(parts, opts)
        all_seeds, subseeds = a1111.all_seeds(opts.seed, opts.subseed, opts.subseed_strength, opts.batch_size)
        rng = a1111.ImageRNG((4, SIZE // 2, SIZE // 2), all_seeds, subseeds=subseeds,
                             subseed_strength=opts.subseed_strength, seed_resize_from_h=opts.seed_resize_from_h,
                             seed_resize_from_w=opts.seed_resize_from_w, eta_noise_seed_delta=opts.ensd)
        sigmas = get_sigmas(parts)(opts.sampler, opts.steps)
        latents = a1111.SAMPLERS[opts.sampler](reference_denoiser(parts, opts, opts.sampler), rng.next() * sigmas[0],
                                               sigmas, rng)
        theirs = parts.vae.decode(latents / parts.scale_factor)
    assert seeds == all_seeds
    assert psnr(ours, theirs) >= 60


HIRES_CASES = {
    "Latent x2": dict(enable_hr=True, hr_scale=2.0, strength=0.6),
    "Latent (bicubic antialiased), resize with crop": dict(enable_hr=True, hr_resize_x=28, hr_resize_y=20,
                                                           hr_upscaler="Latent (bicubic antialiased)"),
    "Latent (nearest-exact), width only, hires prompt": dict(enable_hr=True, hr_resize_x=24,
                                                             hr_upscaler="Latent (nearest-exact)",
                                                             hr_prompt="a blue square", strength=0.5),
    "Lanczos x1.5, Euler second pass, variation seed, ENSD": dict(
        enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", hr_sampler_name="Euler", hr_second_pass_steps=2,
        subseed_strength=0.3, ensd=100, strength=0.7),
    "Nearest x2, resized seed": dict(enable_hr=True, hr_upscaler="Nearest", seed_resize_from_w=20,
                                     seed_resize_from_h=12, strength=0.45),
    "Karras first pass, Exponential second pass (hr_scheduler)": dict(
        enable_hr=True, scheduler="Karras", hr_scheduler="Exponential", hr_sampler_name="Euler", strength=0.6),
    "Karras for both passes (no hr_scheduler: the first pass's)": dict(
        enable_hr=True, sampler="Euler", scheduler="Karras", strength=0.6),
}


@pytest.mark.parametrize("case", HIRES_CASES)
def test_hires_fix_gives_a1111s_image(parts, case):
    opts = dataclasses.replace(BASE, **HIRES_CASES[case])
    hr_sampler = opts.hr_sampler_name or opts.sampler
    hr_opts = dataclasses.replace(opts, prompt=opts.hr_prompt or opts.prompt)
    with torch.no_grad():
        ours, _ = hires_txt2img(parts, opts)
        theirs = a1111.hires_fix(
            vae=parts.vae, scale_factor=parts.scale_factor, denoise=reference_denoiser(parts, opts, opts.sampler),
            denoise_hr=reference_denoiser(parts, hr_opts, hr_sampler), get_sigmas=get_sigmas(parts, opts.scheduler),
            sampler=opts.sampler, hr_sampler=hr_sampler, seed=opts.seed, subseed=opts.subseed,
            subseed_strength=opts.subseed_strength, batch_size=opts.batch_size, width=SIZE, height=SIZE,
            steps=opts.steps, hr_scale=opts.hr_scale, hr_resize_x=opts.hr_resize_x, hr_resize_y=opts.hr_resize_y,
            hr_upscaler=opts.hr_upscaler, hr_second_pass_steps=opts.hr_second_pass_steps,
            denoising_strength=opts.strength, ensd=opts.ensd, seed_resize_from_h=opts.seed_resize_from_h,
            seed_resize_from_w=opts.seed_resize_from_w,
            get_hr_sigmas=get_sigmas(parts, opts.hr_scheduler or opts.scheduler))
    assert ours.shape == theirs.shape
    assert psnr(ours, theirs) >= 60


def test_target_sizes_are_a1111s():
    for scale, rx, ry in [(2.0, 0, 0), (1.5, 0, 0), (2.0, 48, 0), (2.0, 0, 48), (2.0, 64, 40), (2.0, 40, 60)]:
        opts = GenerateOptions(width=32, height=24, hr_scale=scale, hr_resize_x=rx, hr_resize_y=ry)
        t = hires_target(opts, 2)
        ref = a1111.target_resolution(32, 24, scale, rx, ry)
        assert (t.width, t.height, t.truncate_x, t.truncate_y) == ref


def test_a_size_off_the_latent_grid_is_one_clear_error():
    with pytest.raises(ValueError, match=r"32x32 scaled by 1.3 is 41x41, not a multiple of the model's latent "
                                         r"factor 8"):
        hires_target(GenerateOptions(width=32, height=32, hr_scale=1.3), 8)
    with pytest.raises(ValueError, match=r"hires resize 60x0 of 32x32 gives 60x60, not a multiple"):
        hires_target(GenerateOptions(width=32, height=32, hr_resize_x=60), 8)
    with pytest.raises(ValueError, match=r"unknown hires upscaler 'ESRGAN'; valid names: Latent, "):
        upscaler_name("ESRGAN")


def test_infotext_keys_are_a1111s():
    opts = dataclasses.replace(BASE, subseed_strength=0.25, seed_resize_from_w=512, seed_resize_from_h=768,
                               ensd=31337, enable_hr=True, hr_scale=2.0, hr_upscaler="latent (bicubic)",
                               hr_second_pass_steps=10, hr_sampler_name="euler", hr_prompt="x")
    assert seed_params(opts, 8) == {"Variation seed": 8, "Variation seed strength": 0.25,
                                    "Seed resize from": "512x768", "ENSD": 31337}
    assert hires_params(opts) == {"Hires sampler": "Euler", "Hires prompt": "x", "Hires upscale": 2,
                                  "Hires steps": 10, "Hires upscaler": "Latent (bicubic)"}
    resized = dataclasses.replace(opts, hr_resize_x=64, hr_resize_y=0, hr_sampler_name="Euler a", hr_prompt="")
    assert hires_params(resized) == {"Hires resize": "64x0", "Hires steps": 10, "Hires upscaler": "Latent (bicubic)"}
    # ENSD only where a pass's sampler draws later noise (A1111's "uses_ensd"; DDIM with eta > 0)
    assert seed_params(dataclasses.replace(opts, sampler="Euler", hr_sampler_name="Heun"), 8)["ENSD"] is None
    assert seed_params(dataclasses.replace(opts, sampler="DDIM", eta=0.5, enable_hr=False), 8)["ENSD"] == 31337
    # "Hires schedule type" when the second pass's schedule is not the first pass's (A1111's get_sigmas)
    karras = dataclasses.replace(opts, sampler="DPM++ 2M", hr_sampler_name=None, hr_prompt="")
    assert "Hires schedule type" not in hires_params(karras)
    assert hires_params(dataclasses.replace(karras, hr_scheduler="Exponential"))["Hires schedule type"] == "Exponential"
    assert hires_params(dataclasses.replace(karras, hr_sampler_name="Euler"))["Hires sampler"] == "Euler"
    assert "Hires schedule type" not in hires_params(dataclasses.replace(karras, hr_sampler_name="Euler"))
    euler_a = dataclasses.replace(karras, sampler="Euler a", hr_scheduler="Karras")  # no "Schedule type" written
    assert list(hires_params(euler_a))[:1] == ["Hires schedule type"]
    assert hires_params(euler_a)["Hires schedule type"] == "Karras"
    assert seed_params(BASE, 8) == dict.fromkeys(("Variation seed", "Variation seed strength", "Seed resize from",
                                                  "ENSD"))


def test_python_regenerates_from_an_image_and_warns_what_it_cannot_honour(model):
    pipe = Pipeline(model)
    first = pipe.txt2img("a red circle", steps=2, seed=3, subseed=4, subseed_strength=0.5, enable_hr=True,
                         hr_upscaler="Nearest", progress=False)[0]
    again = pipe.txt2img_from_infotext(first, progress=False)[0]
    assert np.array_equal(np.asarray(again), np.asarray(first)) and again.size == (2 * SIZE, 2 * SIZE)
    assert again.info["parameters"] == first.info["parameters"]
    other = pipe.txt2img_from_infotext(first.info["parameters"], seed=4, progress=False)[0]
    assert "Seed: 4," in other.info["parameters"]
    with pytest.warns(InfotextWarning, match=r"infotext keys nanoldm does not use \(kept, ignored\): Foo: 1"):
        pipe.txt2img_from_infotext(first.info["parameters"] + ", Foo: 1", steps=1, progress=False)

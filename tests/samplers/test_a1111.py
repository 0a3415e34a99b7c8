"""A1111 1.10's samplers and schedule types: on a small SD 1.x model of our own (a 3-level VAE, 2 attention
heads), our txt2img images equal those of A1111's algorithm (``a1111_reference``: k-diffusion's functions behind
CompVisDenoiser, driven as A1111 drives them) to >= 60 dB PSNR as 8-bit truncated pixels, batch 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoldm.config import AutoencoderConfig, ModelConfig, TextEncoderConfig, UNetConfig
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.sampling import conditioning
from nanoldm.samplers.a1111 import A1111_SAMPLER_NAMES, find_a1111_sampler
from nanoldm.samplers.schedules import SCHEDULE_NAMES, schedule_sigmas
from tests.samplers.a1111_reference import SAMPLERS, a1111_pixels, a1111_txt2img_latents, external, get_sigmas

SMALL = ModelConfig(
    unet=UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(True, False),
                    num_heads=2, context_dim=16, norm_groups=4),
    vae=AutoencoderConfig(base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, norm_groups=4),
    text=TextEncoderConfig(width=16, layers=1, heads=2, mlp_dim=32), image_size=32)
SIZE, SEED, CFG = 32, 11, 5.0
PROMPT, NEGATIVE = "a red circle", "blue"
MODEL_RANGE = {"DPM fast", "DPM adaptive"}  # A1111 runs them on the model's sigma range: schedules barely matter


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def reference_pixels(pipe, sampler: str, scheduler: str, steps: int, discard: bool = False) -> np.ndarray:
    parts = pipe.parts()
    opts = GenerateOptions(prompt=PROMPT, negative_prompt=NEGATIVE, cfg_scale=CFG, batch_size=2)
    cond = conditioning(parts, opts)
    latents = a1111_txt2img_latents(
        parts.unet, parts.schedule.alphas_cumprod, sampler, scheduler, steps, [SEED, SEED + 1],
        (parts.latent_channels, SIZE // parts.latent_factor, SIZE // parts.latent_factor), cond.context,
        cond.uncond_context, CFG, always_discard=discard)
    with torch.no_grad():
        return a1111_pixels(parts.vae.decode(latents / parts.scale_factor))


def our_images(pipe, sampler: str, scheduler: str, steps: int, **options):
    return pipe.txt2img(PROMPT, NEGATIVE, sampler=sampler, scheduler=scheduler, steps=steps, seed=SEED,
                        batch_size=2, cfg_scale=CFG, width=SIZE, height=SIZE, progress=False, **options)


def our_pixels(pipe, sampler: str, scheduler: str, steps: int, **options) -> np.ndarray:
    return np.stack([np.asarray(im) for im in our_images(pipe, sampler, scheduler, steps, **options)])


@pytest.mark.parametrize("sampler, scheduler", [("Euler", "Automatic"), ("DPM++ 2M", "Automatic"),
                                                ("DPM++ 2M SDE", "Exponential"), ("DPM2", "Karras")])
def test_discard_penultimate_sigma_gives_a1111s_image(pipe, sampler, scheduler):
    """A1111's "Always discard next-to-last sigma": a one-step-longer schedule without its next-to-last level,
    written in the infotext where it changed something (DPM2 drops that level anyway)."""
    got = our_images(pipe, sampler, scheduler, 10, discard_penultimate_sigma=True)
    want = reference_pixels(pipe, sampler, scheduler, 10, discard=True)
    assert psnr(np.stack([np.asarray(im) for im in got]), want) >= 60
    assert ("Discard penultimate sigma: True" in got[0].info["parameters"]) == (sampler != "DPM2")
    if sampler != "DPM2":
        assert psnr(our_pixels(pipe, sampler, scheduler, 10), want) < 60


def _cases():
    for sampler in A1111_SAMPLER_NAMES:
        schedules = ("Automatic", "Karras") if sampler in MODEL_RANGE else SCHEDULE_NAMES
        for scheduler in schedules:
            yield sampler, scheduler


@pytest.mark.parametrize("sampler", A1111_SAMPLER_NAMES)
def test_every_sampler_and_schedule_type_gives_a1111s_image(pipe, sampler):
    """Every schedule type at 10 steps, the sampler's Automatic one at 20 too (DPM adaptive: its own steps)."""
    schedules = ("Automatic", "Karras") if sampler in MODEL_RANGE else SCHEDULE_NAMES
    runs = [(s, 10) for s in schedules] + ([("Automatic", 20)] if sampler != "DPM adaptive" else [])
    for scheduler, steps in runs:
        got, want = our_pixels(pipe, sampler, scheduler, steps), reference_pixels(pipe, sampler, scheduler, steps)
        assert psnr(got, want) >= 60, (sampler, scheduler, steps, psnr(got, want))


def test_images_differ_between_samplers(pipe):
    """The comparison above has teeth: different samplers give visibly different pixels on this model."""
    a, b = our_pixels(pipe, "Euler", "Automatic", 10), our_pixels(pipe, "DPM++ 2M SDE", "Automatic", 10)
    assert psnr(a, b) < 40


@pytest.mark.parametrize("scheduler", SCHEDULE_NAMES[1:])
@pytest.mark.parametrize("steps", [1, 2, 10, 11, 20])
def test_schedule_types_match_a1111(pipe, scheduler, steps):
    wrap = _model_wrap(pipe.parts().schedule)
    want = get_sigmas(wrap, "Euler", scheduler, steps)
    got = schedule_sigmas(scheduler, pipe.parts().schedule, steps)
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)  # float64 vs float32 arithmetic


def _model_wrap(schedule: NoiseSchedule):
    holder = torch.nn.Module()
    holder.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float())
    return external.CompVisDenoiser(holder, quantize=False)


@pytest.mark.parametrize("name, scheduler, want", [
    ("DPM++ 2M Karras", "Automatic", ("DPM++ 2M", "Karras")),
    ("DPM++ SDE Karras", "Automatic", ("DPM++ SDE", "Karras")),
    ("DPM++ 2M SDE Exponential", "Automatic", ("DPM++ 2M SDE", "Exponential")),
    ("dpm++ 2m", "karras", ("DPM++ 2M", "Karras")),
    ("dpmpp_2m_karras", "Automatic", ("DPM++ 2M", "Karras")),
    ("dpmpp_2m_sde_heun", "Automatic", ("DPM++ 2M SDE Heun", "Automatic")),
    ("k_dpmpp_2m", "sgm_uniform", ("DPM++ 2M", "SGM Uniform")),
    ("Euler a", "Automatic", ("Euler a", "Automatic")),
])
def test_legacy_names_map_as_a1111_maps_them(name, scheduler, want):
    spec, schedule = find_a1111_sampler(name, scheduler)
    assert (spec.name, schedule) == want


def test_every_a1111_sampler_is_in_the_reference_table():
    assert set(A1111_SAMPLER_NAMES) == set(SAMPLERS)

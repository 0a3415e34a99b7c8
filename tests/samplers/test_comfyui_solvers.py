"""ComfyUI's own solvers (deis, res_multistep, gradient_estimation, er_sde, seeds, exp_heun, SA-Solver, heunpp2
and the CFG++ forms) beyond the image comparison of ``test_comfyui``: they solve the right equation (an oracle
denoiser of Gaussian data must come out with the data's mean and spread), their weights integrate what they
should, CFG++ reduces to the plain sampler when the negative prompt is the prompt, and the denoiser's unguided
estimate is the negative prompt's own."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nanoldm.config import ScheduleConfig
from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.comfyui import COMFYUI_SAMPLERS, comfy_percent_to_sigma, comfyui_sigmas, sampler_options
from nanoldm.samplers.deis import deis_coefficients
from nanoldm.samplers.sa_solver import adams_weights
from tests.samplers.test_a1111 import NEGATIVE, PROMPT, SIZE, psnr
from tests.samplers.test_samplers import MU, STD, oracle

SD = NoiseSchedule.from_config(ScheduleConfig())
NEW = ["heunpp2", "exp_heun_2_x0", "exp_heun_2_x0_sde", "deis", "res_multistep", "res_multistep_ancestral",
       "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "euler_cfg_pp",
       "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp",
       "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp"]
CFG_PP = {"euler_cfg_pp": "euler", "euler_ancestral_cfg_pp": "euler_ancestral",
          "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral", "dpmpp_2m_cfg_pp": "dpmpp_2m",
          "res_multistep_cfg_pp": "res_multistep", "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
          "gradient_estimation_cfg_pp": "gradient_estimation"}


class Oracle:
    """The exact denoiser of Gaussian data, guided by nothing: its unguided estimate is itself."""

    def __call__(self, x, sigma, cond):
        return oracle(x, sigma, cond)

    def with_uncond(self, x, sigma, cond):
        denoised = oracle(x, sigma, cond)
        return denoised, denoised


@pytest.mark.parametrize("name", NEW)
def test_oracle_lands_on_the_data_distribution(name):
    """100 karras steps from the exact noisy marginal: mean within 0.03, spread within 5%."""
    torch.manual_seed(0)
    spec = COMFYUI_SAMPLERS[name]
    sigmas = comfyui_sigmas(spec, "karras", SD, 100).double()
    x = MU + (STD ** 2 + sigmas[0] ** 2).sqrt() * torch.randn(20000, 4, 1, 1, dtype=torch.float64)
    out = spec.fn(Oracle(), x, sigmas, cond=None, **sampler_options(spec, SD))
    torch.testing.assert_close(out.mean(dim=0, keepdim=True), MU, atol=0.03, rtol=0)
    torch.testing.assert_close(out.std(dim=0, keepdim=True), STD, atol=0, rtol=0.05)


@pytest.mark.parametrize("name", NEW)
def test_a_schedule_that_stops_above_zero_runs(name):
    """Split schedules (ComfyUI's SplitSigmas, KSamplerAdvanced's end_at_step) end at a level above 0: every
    step then moves x on, and the result is the x at that level (here the oracle's spread plus the level's)."""
    torch.manual_seed(0)
    spec = COMFYUI_SAMPLERS[name]
    sigmas = comfyui_sigmas(spec, "karras", SD, 60).double()[:-2]  # stops at the schedule's second-to-last level
    x = MU + (STD ** 2 + sigmas[0] ** 2).sqrt() * torch.randn(4000, 4, 1, 1, dtype=torch.float64)
    out = spec.fn(Oracle(), x, sigmas, cond=None, **sampler_options(spec, SD))
    torch.testing.assert_close(out.std(dim=0, keepdim=True), (STD ** 2 + sigmas[-1] ** 2).sqrt(), atol=0, rtol=0.08)


def test_deis_weights_integrate_the_noise_level():
    """The kernel is d sigma / dt of the fitted VP SDE, so each step's weights sum to sigma_next - sigma (the
    10 000-point Riemann sum in float32 is good to about 1e-4). The step to sigma = 0, where the kernel is
    infinite, is an Euler step and its weights are not used."""
    sigmas = comfyui_sigmas(COMFYUI_SAMPLERS["deis"], "karras", SD, 12)
    steps = deis_coefficients(sigmas)
    assert not steps[0] and [len(w) for w in steps[1:]] == [2] + [3] * 10
    for i, weights in enumerate(steps[:-1]):
        if weights:
            assert float(sum(weights)) == pytest.approx(float(sigmas[i + 1] - sigmas[i]), rel=2e-3, abs=1e-4)


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_sa_solver_weights_integrate_polynomials_exactly(tau):
    """For D(l) = l^p (p below the order), the weights give alpha_t (1 + tau^2) times the integral of
    e^(-(1 + tau^2)(lambda_t - l)) l^p from lambda_s to lambda_t (here by a fine trapezoid rule)."""
    lambdas = torch.tensor([-1.3, -0.9, -0.4, 0.1], dtype=torch.float64)
    lam_s, lam_t, sigma_t = lambdas[-1], torch.tensor(0.7, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    weights = adams_weights(sigma_t, lambdas, lam_s, lam_t, tau)
    grid = torch.linspace(float(lam_s), float(lam_t), 200001, dtype=torch.float64)
    k = 1 + tau ** 2
    for p in range(4):
        exact = sigma_t * lam_t.exp() * k * torch.trapezoid(torch.exp(-k * (lam_t - grid)) * grid ** p, grid)
        assert float((weights * lambdas ** p).sum()) == pytest.approx(float(exact), rel=1e-7, abs=1e-9)


def test_sa_solver_is_stochastic_only_between_the_20_and_80_percent_levels():
    start, end = comfy_percent_to_sigma(SD, 0.2), comfy_percent_to_sigma(SD, 0.8)
    sigmas = SD.sigmas.float()
    assert sigmas[199] < end < sigmas[200] < sigmas[799] < start < sigmas[800]
    assert math.log(start) == pytest.approx(0.8 * math.log(sigmas[799]) + 0.2 * math.log(sigmas[800]), rel=1e-5)
    assert comfy_percent_to_sigma(SD, 0.0) > 1e8 and comfy_percent_to_sigma(SD, 1.0) == 0.0


@pytest.mark.parametrize("name", sorted(CFG_PP))
def test_cfg_pp_is_the_plain_sampler_when_the_negative_prompt_is_the_prompt(pipe, name):
    """D_u = D: the CFG++ step along the unguided estimate is the ordinary step."""
    def pixels(sampler):
        images = pipe.txt2img(PROMPT, PROMPT, sampler=sampler, scheduler="karras", steps=8, seed=3, batch_size=2,
                              cfg_scale=2.0, width=SIZE, height=SIZE, like="comfyui", progress=False)
        return np.stack([np.asarray(im) for im in images])

    assert psnr(pixels(name), pixels(CFG_PP[name])) >= 60


def test_cfg_pp_differs_from_the_plain_sampler_under_guidance(pipe):
    """... and not otherwise (41.6 dB apart on this small random model: far below the 60 dB line)."""
    cfg_pp, plain = (np.asarray(pipe.txt2img(PROMPT, NEGATIVE, sampler=s, scheduler="karras", steps=8, seed=3,
                                             cfg_scale=2.0, width=SIZE, height=SIZE, like="comfyui",
                                             progress=False)[0]) for s in ("euler_cfg_pp", "euler"))
    assert psnr(cfg_pp, plain) < 50


def test_the_unguided_estimate_is_the_negative_prompts_own(pipe):
    """``with_uncond``: the guided output is the ordinary call's (bitwise but at scale 1, where the ordinary call
    skips the negative prompt); the unguided one is the negative context run alone, at every scale."""
    parts = pipe.parts()
    denoiser = Denoiser(parts.unet, parts.schedule, parts.prediction_type, quantize=True)
    torch.manual_seed(1)
    context, uncond_context = torch.randn(2, 2, 77, parts.unet.cfg.context_dim)
    x, sigma = torch.randn(2, parts.latent_channels, 4, 4) * 3, torch.tensor(3.0)
    with torch.no_grad():
        for scale in (1.0, 4.0):
            cond = Conditioning(context=context, uncond_context=uncond_context, cfg_scale=scale)
            denoised, uncond = denoiser.with_uncond(x, sigma, cond)
            if scale != 1:  # at 1 the ordinary call runs the prompt alone; with_uncond blends as ComfyUI does
                assert torch.equal(denoised, denoiser(x, sigma, cond))
            torch.testing.assert_close(denoised, denoiser(x, sigma, cond), rtol=1e-4, atol=1e-4)
            alone = denoiser(x, sigma, Conditioning(context=uncond_context))
            torch.testing.assert_close(uncond, alone, rtol=1e-4, atol=1e-4)
        plain = Conditioning(context=context)
        assert all(torch.equal(d, denoiser(x, sigma, plain)) for d in denoiser.with_uncond(x, sigma, plain))

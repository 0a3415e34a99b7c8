"""NoiseSchedule against its mathematics (Ho et al. 2020) and against diffusers' tables and timesteps."""
from __future__ import annotations

import math

import diffusers
import pytest
import torch

from nanoldm.config import ScheduleConfig
from nanoldm.diffusion.schedule import NoiseSchedule

# diffusers' schedulers hand torch tensors to np.array, which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SD = NoiseSchedule.from_config(ScheduleConfig())  # scaled_linear 0.00085 .. 0.012, 1000 steps
SD_SCHEDULER_CONFIG = dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1,
                           set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False)


def test_sd_alphas_cumprod_and_sigma_range():
    assert round(float(SD.alphas_cumprod[-1]), 5) == 0.00466
    assert round(float(SD.sigmas[0]), 4) == 0.0292
    assert round(float(SD.sigmas[-1]), 4) == 14.6146
    assert torch.all(SD.sigmas[1:] > SD.sigmas[:-1])


@pytest.mark.parametrize("ours, theirs", [("linear", "linear"), ("scaled_linear", "scaled_linear"),
                                          ("cosine", "squaredcos_cap_v2")])
def test_alphas_cumprod_match_diffusers(ours, theirs):
    start, end = (0.0001, 0.02) if ours == "linear" else (0.00085, 0.012)
    schedule = NoiseSchedule.from_config(ScheduleConfig(beta_schedule=ours, beta_start=start, beta_end=end))
    reference = diffusers.DDPMScheduler(beta_schedule=theirs, beta_start=start, beta_end=end).alphas_cumprod
    torch.testing.assert_close(schedule.alphas_cumprod.float(), reference, rtol=1e-5, atol=1e-7)
    assert float(schedule.betas.max()) <= 0.999


def test_unknown_beta_schedule():
    with pytest.raises(ValueError, match="beta_schedule"):
        NoiseSchedule.from_config(ScheduleConfig(beta_schedule="quadratic"))


def test_q_sample_moments():
    """Over many draws x_t has mean sqrt(ab_t) x0 and variance 1 - ab_t."""
    n, t = 20000, torch.tensor([0, 250, 999])
    x0 = torch.tensor([1.5, -0.7, 0.3]).reshape(3, 1)
    x_t = SD.q_sample(x0.expand(3, n), t, torch.randn(3, n))
    ab = SD.alphas_cumprod[t].float().reshape(3, 1)
    torch.testing.assert_close(x_t.mean(1, keepdim=True), ab.sqrt() * x0, atol=0.03, rtol=0)
    torch.testing.assert_close(x_t.var(1, keepdim=True), 1 - ab, atol=0.03, rtol=0.03)


@pytest.mark.parametrize("t", [1, 2, 37, 500, 999])
def test_posterior_is_the_bayes_product(t):
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0), its moments found by integration on a grid."""
    x0, x_t = 0.8, -0.4
    beta, ab_prev = float(SD.betas[t]), float(SD.alphas_cumprod[t - 1])
    center, width = math.sqrt(ab_prev) * x0, 12 * math.sqrt(beta)
    grid = torch.linspace(center - width - 3, center + width + 3, 400001, dtype=torch.float64)
    log_p = (-(x_t - math.sqrt(1 - beta) * grid) ** 2 / (2 * beta)
             - (grid - math.sqrt(ab_prev) * x0) ** 2 / (2 * (1 - ab_prev)))
    p = (log_p - log_p.max()).exp()
    p = p / p.sum()
    mean_ref = (p * grid).sum()
    var_ref = (p * (grid - mean_ref) ** 2).sum()

    x0_, xt_ = torch.full((1, 1), x0, dtype=torch.float64), torch.full((1, 1), x_t, dtype=torch.float64)
    mean, var, log_var = SD.posterior(xt_, x0_, torch.tensor([t]))
    assert abs(float(mean) - float(mean_ref)) < 1e-6
    assert abs(float(var) / float(var_ref) - 1) < 1e-4
    assert abs(float(log_var) - math.log(float(var))) < 1e-9


def test_posterior_log_variance_is_clipped_at_t0():
    _, var, log_var = SD.posterior(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]))
    assert float(var) == 0.0
    assert math.isfinite(float(log_var))


def test_prediction_conversions_invert_each_other():
    t = torch.tensor([0, 10, 500, 999])
    x0, eps = torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x_t = SD.q_sample(x0, t, eps)
    v = SD.velocity(x0, eps, t)
    for got, want in [(SD.eps_to_x0(x_t, t, eps), x0), (SD.x0_to_eps(x_t, t, x0), eps),
                      (SD.v_to_x0(x_t, t, v), x0), (SD.v_to_eps(x_t, t, v), eps)]:
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_sigma_to_t_and_back():
    t = torch.arange(1000, dtype=torch.float64)
    assert (SD.sigma_to_t(SD.sigmas) - t).abs().max() < 1e-6
    assert (SD.sigma_to_t(SD.t_to_sigma(t)) - t).abs().max() < 1e-6
    frac = torch.tensor([0.25, 17.5, 498.123, 998.9], dtype=torch.float64)
    assert (SD.sigma_to_t(SD.t_to_sigma(frac)) - frac).abs().max() < 1e-9
    # out of range: clamped to the table's ends; python floats work too
    assert float(SD.sigma_to_t(1e-4)) == 0.0 and float(SD.sigma_to_t(100.0)) == 999.0
    # linear-in-sigma interpolation agrees at integers and stays close in between
    assert torch.allclose(SD.t_to_sigma(t, log_space=False), SD.sigmas)
    assert torch.allclose(SD.t_to_sigma(frac, log_space=False), SD.t_to_sigma(frac), rtol=2e-2)
    assert torch.allclose(SD.t_to_sigma(frac[1:], log_space=False), SD.t_to_sigma(frac[1:]), rtol=3e-4)


STEP_COUNTS = [1, 3, 7, 10, 20, 25, 50, 999]


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_timesteps_match_diffusers(spacing, steps):
    """The Euler family uses the timesteps as they are; DDIM rounds linspace ones."""
    cfg = dict(SD_SCHEDULER_CONFIG, timestep_spacing=spacing)
    euler = diffusers.EulerDiscreteScheduler.from_config(cfg)
    euler.set_timesteps(steps)
    ours = SD.timesteps(steps, spacing, steps_offset=1 if spacing == "leading" else 0)
    assert torch.equal(ours.float(), euler.timesteps)
    ddim = diffusers.DDIMScheduler.from_config(cfg)
    ddim.set_timesteps(steps)
    assert torch.equal(ours.round().long(), ddim.timesteps)


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_timesteps_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        SD.timesteps(steps)


def test_timesteps_unknown_spacing():
    with pytest.raises(ValueError, match="leading, trailing, linspace"):
        SD.timesteps(10, "karras")

"""UniPC (``samplers/unipc.py``) against A1111's UniPC restated in its VP variables (``a1111_unipc_reference``)
and against diffusers' ``UniPCMultistepScheduler``, on a smooth toy eps model with SD's noise schedule."""
from __future__ import annotations

import diffusers
import pytest
import torch

from nanoldm.config import ScheduleConfig
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers.a1111_timesteps import a1111_timesteps
from nanoldm.samplers.unipc import sample_unipc, unipc_times, vp_discrete_sigmas, vp_discrete_timestep
from tests.samplers.a1111_unipc_reference import a1111_unipc

SCHEDULE = NoiseSchedule.from_config(ScheduleConfig())  # SD: scaled_linear 0.00085 .. 0.012, 1000 steps
AC = SCHEDULE.alphas_cumprod.float()  # float32, as A1111's model holds it
_g = torch.Generator().manual_seed(1234)
W, U, V = (torch.randn(4, 8, 8, generator=_g) for _ in range(3))
X_T = torch.randn(2, 4, 8, 8, generator=_g)


def eps_fn(x_vp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic toy eps model, smooth in x and in the fractional timestep t (shape () or (B,))."""
    t = torch.as_tensor(t).reshape(-1, 1, 1, 1)
    bias = (U * torch.sin(t / 250) + V * torch.cos(t / 400)).to(x_vp.dtype)
    return torch.tanh(0.8 * W * x_vp + bias)


def make_denoiser(ac: torch.Tensor):
    def denoiser(x, sigma, cond):  # sigma space: x = x_vp * sqrt(1 + sigma^2), returns the x0 prediction
        eps = eps_fn(x / (1 + sigma**2).sqrt(), vp_discrete_timestep(ac, sigma))
        return x - sigma * eps

    return denoiser


def ours_vp(x_vp, steps, t_start=None, ac=AC, **options):
    """Our sampler on A1111's grid, from and back to the VP latent."""
    sigmas = vp_discrete_sigmas(ac, unipc_times(steps, t_start=t_start))
    x = sample_unipc(make_denoiser(ac), x_vp * (1 + sigmas[0] ** 2).sqrt(), sigmas, cond=None, **options)
    return x / (1 + sigmas[-1] ** 2).sqrt()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


OPTIONS = [dict(variant=v, order=o, lower_order_final=f) for v in ("bh1", "bh2") for o in (2, 3) for f in (True, False)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_matches_a1111_unipc(steps, options):
    want = a1111_unipc(eps_fn, AC, X_T.clone(), steps, **options)
    assert rel_err(ours_vp(X_T, steps, **options), want) < 1e-5  # float32 A1111 vs our float64 coefficients


@pytest.mark.parametrize("options", OPTIONS + [dict(variant="bh1", order=4, lower_order_final=False),
                                               dict(variant="bh2", order=1, lower_order_final=True)],
                         ids=lambda o: "-".join(map(str, o.values())))
def test_is_a1111_unipc_exactly_in_float64(options):
    """Run both in float64: the sigma-space update is the VP one divided by alpha_t, to rounding."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ac = SCHEDULE.alphas_cumprod
        want = a1111_unipc(eps_fn, ac, X_T.double(), 12, **options)
        got = ours_vp(X_T.double(), 12, ac=ac, **options)
    finally:
        torch.set_default_dtype(default)
    assert rel_err(got, want) < 1e-12


def test_img2img_matches_a1111():
    """Strength 0.5 of 20 steps: A1111 runs the CompVis timesteps[:t_enc] as t_start and t_enc UniPC steps."""
    steps, strength = 20, 0.5
    t_enc = int(strength * steps)
    timesteps = a1111_timesteps(steps)[:t_enc]
    t_start = timesteps[-1] / 1000 + 1 / 1000  # a float32 tensor, as in A1111
    noised = AC[timesteps[-1] + 50].sqrt() * torch.randn(2, 4, 8, 8) + (1 - AC[timesteps[-1] + 50]).sqrt() * X_T
    want = a1111_unipc(eps_fn, AC, noised.clone(), len(timesteps), t_start=t_start)
    assert rel_err(ours_vp(noised, len(timesteps), t_start=float(t_start)), want) < 1e-5


def diffusers_unipc(steps: int, variant: str, order: int, lower_order_final: bool) -> torch.Tensor:
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        solver_order=order, solver_type=variant, predict_x0=True, lower_order_final=lower_order_final,
        timestep_spacing="linspace", final_sigmas_type="sigma_min")
    scheduler.set_timesteps(steps)
    assert torch.allclose(vp_discrete_timestep(AC, vp_discrete_sigmas(AC, unipc_times(steps)))[:-1],
                          scheduler.timesteps.double(), atol=1e-6)  # integer model times: the same grid
    x = X_T.clone()
    for t in scheduler.timesteps:
        x = scheduler.step(eps_fn(x, t.float().expand(len(x))), t, x).prev_sample
    return x


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("steps", [3, 9, 27])  # 999 / steps an integer: A1111's model times are integers
def test_matches_diffusers_unipc(steps, options):
    want = diffusers_unipc(steps, options["variant"], options["order"], options["lower_order_final"])
    assert rel_err(ours_vp(X_T, steps, **options), want) < 1e-4


@pytest.mark.parametrize("wrong", [dict(variant="bh2"), dict(order=2), dict(lower_order_final=False)])
def test_a_wrong_variant_order_or_final_rule_is_detected(wrong):
    want = a1111_unipc(eps_fn, AC, X_T.clone(), 10)
    assert rel_err(ours_vp(X_T, 10, **{**dict(variant="bh1", order=3, lower_order_final=True), **wrong}), want) > 1e-3


def test_time_grid_is_a1111s():
    t = unipc_times(20)
    assert t[0] == 1 and t[-1] == pytest.approx(1e-3) and len(t) == 21
    knots = torch.arange(1, 1001, dtype=torch.float64) / 1000  # t_i = (i + 1) / N carry the training sigmas
    torch.testing.assert_close(vp_discrete_sigmas(AC, knots), ((1 - AC.double()) / AC.double()).sqrt(), rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(vp_discrete_timestep(AC, vp_discrete_sigmas(AC, t)), (t - 1e-3) * 1000,
                               rtol=0, atol=1e-9)
    assert unipc_times(10, t_start=0.452)[0] == 0.452


def test_one_denoiser_call_per_step_and_callbacks():
    calls, seen = [], []
    denoiser = make_denoiser(AC)
    sigmas = vp_discrete_sigmas(AC, unipc_times(8))
    sample_unipc(lambda x, s, c: calls.append(s) or denoiser(x, s, c), X_T * (1 + sigmas[0] ** 2).sqrt(), sigmas,
                 cond=None, callback=lambda i, x, d: seen.append(i))
    assert len(calls) == 8 and seen == list(range(8))
    assert torch.equal(torch.stack(calls), sigmas[:-1])  # the start, then each predicted point but the last


def test_bad_options_are_refused():
    sigmas = vp_discrete_sigmas(AC, unipc_times(3))
    with pytest.raises(ValueError, match="bh1, bh2"):
        sample_unipc(make_denoiser(AC), X_T, sigmas, cond=None, variant="vary_coeff")
    with pytest.raises(ValueError, match="order"):
        sample_unipc(make_denoiser(AC), X_T, sigmas, cond=None, order=4)

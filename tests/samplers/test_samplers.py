"""Samplers and their registry: every sampler lands on the data distribution given an oracle denoiser, and each
reproduces diffusers' scheduler of the same name step by step (txt2img, img2img, eps and v models)."""
from __future__ import annotations

import inspect

import diffusers
import pytest
import torch

from nanoldm.config import PredictionType, ScheduleConfig, UNetConfig
from nanoldm.diffusion.denoiser import Conditioning, Denoiser
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers import SAMPLER_NAMES, SAMPLERS, get_sampler
from nanoldm.unet.unet import UNet

# diffusers' schedulers hand torch tensors to np.array, which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SD = NoiseSchedule.from_config(ScheduleConfig())
# SD 1.x's scheduler_config.json (which, unlike PNDM's defaults, says clip_sample: false)
SD_SCHEDULER_CONFIG = dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012,
                           beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1,
                           set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False)
DIFFUSERS = {
    "DDPM": (diffusers.DDPMScheduler, {}),
    "DDIM": (diffusers.DDIMScheduler, {}),
    "Euler": (diffusers.EulerDiscreteScheduler, {}),
    "Euler a": (diffusers.EulerAncestralDiscreteScheduler, {}),
    "Heun": (diffusers.HeunDiscreteScheduler, {}),
    "DPM++ 2M": (diffusers.DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (diffusers.DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}
DETERMINISTIC = ["DDIM", "Euler", "Heun", "DPM++ 2M", "DPM++ 2M Karras"]
MICRO_UNET = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_levels=(True, False),
                        num_heads=2, context_dim=8, norm_groups=4)  # a few ms a call: parity runs make hundreds


def diffusers_scheduler(name: str, **config):
    cls, extra = DIFFUSERS[name]
    return cls.from_config(dict(SD_SCHEDULER_CONFIG, **extra, **config))


# --- registry ---------------------------------------------------------------------------------------------

def test_names_ids_and_case():
    assert SAMPLER_NAMES == ("DDPM", "DDIM", "Euler", "Euler a", "Heun", "DPM++ 2M", "DPM++ 2M Karras")
    ids = {"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "euler_a": "Euler a", "heun": "Heun",
           "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras"}
    for key, name in ids.items():
        assert get_sampler(key).name == name
        assert get_sampler(name.upper()).name == name
        assert get_sampler(f" {name.lower()} ").name == name


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown sampler 'LMS'") as err:
        get_sampler("LMS")
    for name in SAMPLER_NAMES:
        assert repr(name) in str(err.value) and get_sampler(name).id in str(err.value)


@pytest.mark.parametrize("steps", [0, -1, 2.5])
def test_bad_step_count(steps):
    with pytest.raises(ValueError, match="steps"):
        get_sampler("Euler").sigmas(SD, steps)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.parametrize("steps", [1, 10, 20, 50])
def test_sigmas_match_diffusers(name, steps):
    sigmas = get_sampler(name).sigmas(SD, steps)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float32
    assert torch.all(sigmas[1:] < sigmas[:-1])
    scheduler = diffusers_scheduler(name)
    scheduler.set_timesteps(steps)
    if hasattr(scheduler, "sigmas"):
        theirs = scheduler.sigmas.unique_consecutive()  # Heun lists each inner sigma twice
    else:  # DDIM and DDPM: the sigma of each timestep, then of the "previous timestep" of the last step
        ab = scheduler.alphas_cumprod[scheduler.timesteps]
        final = scheduler.final_alpha_cumprod if name == "DDIM" else torch.tensor(1.0)
        theirs = torch.cat([((1 - ab) / ab).sqrt(), ((1 - final) / final).sqrt().reshape(1)])
    torch.testing.assert_close(sigmas, theirs.float(), rtol=2e-5, atol=1e-6)


def test_declared_options_are_keywords_of_the_sampler():
    for spec in SAMPLERS.values():
        assert set(spec.options) <= set(inspect.signature(spec.fn).parameters), spec.name


def test_options_reach_only_samplers_that_take_them():
    x, sigmas = torch.randn(2, 4, 1, 1), get_sampler("DDIM").sigmas(SD, 5)

    def denoiser(x, sigma, cond):
        return 0.5 * x

    deterministic = get_sampler("DDIM").sample(denoiser, x, sigmas, cond=None, eta=0.0)
    stochastic = get_sampler("DDIM").sample(denoiser, x, sigmas, cond=None, eta=1.0)
    assert not torch.allclose(deterministic, stochastic)
    euler_sigmas = get_sampler("Euler").sigmas(SD, 5)
    torch.testing.assert_close(get_sampler("Euler").sample(denoiser, x, euler_sigmas, cond=None, eta=0.7),
                               get_sampler("Euler").sample(denoiser, x, euler_sigmas, cond=None))


@pytest.mark.parametrize("strength", [0.0, 0.3, 0.6, 0.75, 1.0])
@pytest.mark.parametrize("steps", [10, 25])
def test_img2img_sigmas_follow_diffusers_get_timesteps(strength, steps):
    """StableDiffusionImg2ImgPipeline.get_timesteps keeps the last min(int(steps * strength), steps) steps."""
    spec = get_sampler("Euler")
    sigmas = spec.sigmas(SD, steps)
    kept = spec.img2img_sigmas(sigmas, strength)
    assert len(kept) - 1 == min(int(steps * strength), steps)
    assert torch.equal(kept, sigmas[len(sigmas) - len(kept):])


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_callback_once_per_step_and_one_step_runs(name):
    spec = get_sampler(name)
    seen = []
    for steps in (1, 7):
        seen.clear()
        sigmas = spec.sigmas(SD, steps)
        x = spec.sample(lambda x, s, c: 0.9 * x, torch.randn(1, 4, 2, 2) * spec.init_noise_sigma(sigmas), sigmas,
                        cond=None, callback=lambda i, x, d: seen.append(i))
        assert seen == list(range(steps)) and torch.isfinite(x).all()


# --- an oracle denoiser: every sampler must land on the data distribution ---------------------------------

MU = torch.tensor([1.0, -0.5, 0.0, 2.0], dtype=torch.float64).reshape(1, 4, 1, 1)
STD = torch.tensor([0.5, 1.0, 0.7, 0.8], dtype=torch.float64).reshape(1, 4, 1, 1)


def oracle(x, sigma, cond):
    """E[x0 | x0 + sigma eps = x] for Gaussian data x0 ~ N(MU, STD^2) per channel."""
    return (STD**2 * x + sigma**2 * MU) / (STD**2 + sigma**2)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_oracle_lands_on_the_data_distribution(name):
    """200 steps: first-order and ancestral samplers shrink the variance by a few percent at 25-50 steps
    (their discretisation error, which halves as the steps double), the second-order ones barely."""
    spec, n = get_sampler(name), 20000
    sigmas = spec.sigmas(SD, 200).double()
    # start from the exact noisy marginal N(MU, STD^2 + sigma^2), so only the sampler's own error remains
    x = MU + (STD**2 + sigmas[0] ** 2).sqrt() * torch.randn(n, 4, 1, 1, dtype=torch.float64)
    out = spec.sample(oracle, x, sigmas, cond=None)
    mean, std = out.mean(dim=0, keepdim=True), out.std(dim=0, keepdim=True)
    torch.testing.assert_close(mean, MU, atol=0.03, rtol=0)
    torch.testing.assert_close(std, STD, atol=0, rtol=0.05)


# --- parity with diffusers, step by step ------------------------------------------------------------------

@pytest.fixture(scope="module")
def model():
    """A fixed eps (or v) model of (x, t): a tiny random UNet around a smooth t-dependent term."""
    torch.manual_seed(0)
    unet = UNet(MICRO_UNET).eval().requires_grad_(False)
    context = torch.randn(1, 5, MICRO_UNET.context_dim)

    def eps(x, t):
        t = torch.as_tensor(t, dtype=torch.float32)
        return x * (t / 1000).sqrt() + 0.5 * unet(x, t, context)

    return eps


def run_diffusers(name, eps, start, steps, *, strength=None, x0=None, generator=None, prediction_type="epsilon",
                  **step_options):
    """The scheduler loop of diffusers' txt2img / img2img pipelines; x after each full step."""
    scheduler = diffusers_scheduler(name, prediction_type=prediction_type)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    if strength is None:
        x = start * scheduler.init_noise_sigma
    else:  # StableDiffusionImg2ImgPipeline.get_timesteps and prepare_latents
        t_start = max(steps - min(int(steps * strength), steps), 0)
        timesteps = timesteps[t_start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        x = scheduler.add_noise(x0, start, timesteps[:1])
    if generator is not None:
        step_options["generator"] = generator
    xs = []
    for t in timesteps:
        x = scheduler.step(eps(scheduler.scale_model_input(x, t), t), t, x, **step_options).prev_sample
        if getattr(scheduler, "state_in_first_order", True):  # Heun: after its second model call
            xs.append(x)
    if xs[-1] is not x:  # Heun's last step is first order only
        xs.append(x)
    return xs


def run_ours(name, eps, start, steps, *, strength=None, x0=None, prediction_type="epsilon", **options):
    """The same through the registry and our Denoiser; x after each step in diffusers' space, and the result."""
    spec = get_sampler(name)
    sigmas = spec.sigmas(SD, steps)
    if strength is None:
        x = start * spec.init_noise_sigma(sigmas)
    else:
        sigmas = spec.img2img_sigmas(sigmas, strength)
        x = x0 + start * sigmas[0]
    unet = lambda x_in, t, context, class_labels=None: eps(x_in, t)  # noqa: E731
    denoiser = Denoiser(unet, SD, PredictionType(prediction_type), quantize=spec.quantize)
    xs = []

    def record(i, x, denoised):
        xs.append(x / (1 + sigmas[i + 1] ** 2).sqrt() if spec.vp else x)

    out = spec.sample(denoiser, x, sigmas, cond=Conditioning(context=torch.zeros(1, 1, 1)), callback=record,
                      **options)
    return xs, out


def assert_same_trajectory(ours, out, theirs):
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert (a - b).abs().max() <= 1e-4, f"step {i}: max abs diff {(a - b).abs().max():.2e}"
    assert (out - theirs[-1]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("steps", [10, 20])
def test_matches_diffusers_txt2img(model, name, steps):
    noise = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert_same_trajectory(*run_ours(name, model, noise, steps), run_diffusers(name, model, noise, steps))


@pytest.mark.parametrize("name", ["DDIM", "Euler", "DPM++ 2M Karras"])
def test_matches_diffusers_v_prediction(model, name):
    noise = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert_same_trajectory(*run_ours(name, model, noise, 15, prediction_type="v_prediction"),
                               run_diffusers(name, model, noise, 15, prediction_type="v_prediction"))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_matches_diffusers_img2img(model, name):
    noise, x0 = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        ours = run_ours(name, model, noise, 20, strength=0.6, x0=x0)
        theirs = run_diffusers(name, model, noise, 20, strength=0.6, x0=x0)
    assert len(theirs) == 12
    assert_same_trajectory(*ours, theirs)


@pytest.mark.parametrize("name, options", [("Euler a", {}), ("DDPM", {}), ("DDIM", {"eta": 0.5})])
def test_stochastic_samplers_match_diffusers_given_the_same_noise(model, name, options):
    """Both draw their per-step noise from generators seeded alike, one draw per step."""
    noise = torch.randn(1, 4, 8, 8)
    ours_generator, their_generator = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    with torch.no_grad():
        ours = run_ours(name, model, noise, 12, noise=lambda: torch.randn(1, 4, 8, 8, generator=ours_generator),
                        **options)
        theirs = run_diffusers(name, model, noise, 12, generator=their_generator, **options)
    assert_same_trajectory(*ours, theirs)

"""A model folder's scheduler_config.json is honoured as diffusers' ``XScheduler.from_config`` honours it:
``timestep_spacing``, ``steps_offset`` and ``use_karras_sigmas`` give each sampler diffusers' noise levels,
timesteps and starting noise scale."""
import itertools

import diffusers
import numpy as np
import pytest
import torch

from nanoldm.checkpoint.diffusers_config import schedule_config_from_diffusers, schedule_config_to_diffusers
from nanoldm.config import ScheduleConfig
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.samplers import get_sampler

SD = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "num_train_timesteps": 1000, "skip_prk_steps": True, "set_alpha_to_one": False}
VARIANTS = [dict(zip(("timestep_spacing", "steps_offset", "use_karras_sigmas"), v))
            for v in itertools.product(("leading", "trailing", "linspace", None), (0, 1), (False, True))]


def reference(name: str, config: dict):
    kinds = {"Euler": diffusers.EulerDiscreteScheduler, "Euler a": diffusers.EulerAncestralDiscreteScheduler,
             "Heun": diffusers.HeunDiscreteScheduler, "DDIM": diffusers.DDIMScheduler,
             "DDPM": diffusers.DDPMScheduler, "DPM++ 2M": diffusers.DPMSolverMultistepScheduler}
    extra = {"DDIM": dict(clip_sample=False), "DDPM": dict(clip_sample=False),
             "DPM++ 2M": dict(algorithm_type="dpmsolver++", solver_order=2)}.get(name, {})
    return kinds[name].from_config(config, **extra)


def folder_config(variant: dict) -> dict:
    return {**SD, **{k: v for k, v in variant.items() if v is not None}}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
@pytest.mark.parametrize("name", ["Euler", "Euler a", "Heun", "DDIM", "DDPM", "DPM++ 2M"])
@pytest.mark.parametrize("steps", [10, 25])
def test_noise_levels_follow_the_folder_config_as_diffusers_does(name, variant, steps):
    config = folder_config(variant)
    schedule = NoiseSchedule.from_config(schedule_config_from_diffusers(config))
    spec = get_sampler(name)
    ours = spec.sigmas(schedule, steps)
    ref = reference(name, config)
    ref.set_timesteps(steps)
    if name in ("DDIM", "DDPM"):  # VP schedulers: integer timesteps, compared through the sigma table
        want = schedule.sigmas[ref.timesteps.long()].float()
        assert torch.equal(ours[:-1], want)
        return
    want = ref.sigmas.float()
    if name == "Heun":  # diffusers repeats each inner level for its two stages
        want = torch.cat([want[:1], want[1:-1:2], want[-1:]])
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-6)
    vp_scale = float((1 + ours[0] ** 2).sqrt()) if spec.vp else 1.0  # unit VP noise, seen in sigma space
    assert float(spec.init_noise_sigma(ours, schedule.placement)) == pytest.approx(
        float(ref.init_noise_sigma) * vp_scale, rel=1e-5)


def test_a_folder_saved_by_diffusers_says_leading_and_euler_follows_it():
    """What recent diffusers versions write for SD 1.x (PNDM's defaults made explicit): Euler then runs on
    "leading" timesteps shifted by steps_offset and starts from sqrt(1 + sigma_max^2) noise."""
    schedule = NoiseSchedule.from_config(schedule_config_from_diffusers({**SD, "steps_offset": 1,
                                                                        "timestep_spacing": "leading"}))
    sigmas = get_sampler("Euler").sigmas(schedule, 10)
    assert torch.equal(sigmas[:-1], schedule.sigmas[torch.arange(901, 0, -100)].float())
    assert np.isclose(float(get_sampler("Euler").init_noise_sigma(sigmas, schedule.placement)),
                      float((1 + sigmas[0] ** 2).sqrt()))


def test_our_folders_write_only_what_was_set_and_read_back_the_same():
    plain = ScheduleConfig()
    written = schedule_config_to_diffusers(plain)
    assert "timestep_spacing" not in written and "use_karras_sigmas" not in written and written["steps_offset"] == 1
    assert schedule_config_from_diffusers(written) == plain
    tuned = ScheduleConfig(timestep_spacing="trailing", steps_offset=0, use_karras_sigmas=True)
    assert schedule_config_from_diffusers(schedule_config_to_diffusers(tuned)) == tuned


@pytest.mark.parametrize("change, words", [({"timestep_spacing": "middle"}, "timestep_spacing 'middle'"),
                                           ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr")])
def test_a_config_we_cannot_honour_is_refused_by_name(change, words):
    with pytest.raises(ValueError, match=words):
        schedule_config_from_diffusers({**SD, **change})

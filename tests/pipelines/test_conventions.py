"""``like``: A1111's img2img step selection, the infotext's sampler and schedule type, 8-bit conversion by
truncation or rounding, and bad names (one line, the valid ones listed; CLI exit 2)."""
import numpy as np
import pytest
import torch

from nanoldm.cli.__main__ import main
from nanoldm.config import ScheduleConfig
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import a1111_img2img_steps, infotext_names, plan
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.rng import ImageNoise
from nanoldm.samplers.a1111 import A1111_SAMPLERS

SD = NoiseSchedule.from_config(ScheduleConfig())


def _noise():
    return ImageNoise([1, 2], (4, 2, 2))


@pytest.mark.parametrize("steps, strength, t_enc", [(20, 0.75, 15), (20, 0.6, 12), (10, 1.0, 9), (7, 0.3, 2)])
def test_a1111_img2img_runs_sigmas_from_steps_minus_t_enc_minus_1(steps, strength, t_enc):
    """``setup_img2img_steps``: t_enc = int(min(strength, 0.999) * steps); the sampler runs t_enc + 1 steps on
    ``sigmas[steps - t_enc - 1:]`` and the init latents are noised to its first level."""
    assert a1111_img2img_steps(steps, strength) == (steps, t_enc)
    for name in ("Euler", "DPM++ 2M", "DPM2"):
        opts = GenerateOptions(sampler=name, steps=steps, strength=strength)
        full = A1111_SAMPLERS[name].sigmas(SD, steps)
        got = plan(SD, opts, _noise(), img2img=True)
        torch.testing.assert_close(got.sigmas, full[steps - t_enc - 1:], rtol=0, atol=0)
        assert got.start_sigma == full[steps - t_enc - 1] and len(got.sigmas) - 1 == t_enc + 1


def test_strength_zero_reruns_nothing():
    """A1111 would still run its last step; nanoldm keeps the image (one level: sample_latents returns the init)."""
    assert a1111_img2img_steps(20, 0.0) == (20, 0)
    assert len(plan(SD, GenerateOptions(sampler="Euler", steps=20, strength=0.0), _noise(), img2img=True).sigmas) == 1


def test_hires_steps_stretch_the_schedule():
    """With the second pass's own steps (Hires. fix): steps / strength long, exactly hires_steps run."""
    assert a1111_img2img_steps(20, 0.5, hires_steps=10) == (20, 9)
    assert a1111_img2img_steps(20, 0.7, hires_steps=10) == (14, 9)
    got = plan(SD, GenerateOptions(sampler="Euler", steps=20, strength=0.7), _noise(), img2img=True, hires_steps=10)
    assert len(got.sigmas) - 1 == 10


def test_txt2img_starts_at_sigmas_0_and_diffusers_dpm_at_unit_variance():
    a = plan(SD, GenerateOptions(sampler="DPM++ 2M", steps=10), _noise())
    assert a.start_sigma == a.sigmas[0] and not a.quantize and a.schedule_label == "Karras"
    d = plan(SD, GenerateOptions(sampler="DPM++ 2M", steps=10, like="diffusers"), _noise())
    assert d.quantize and d.schedule_label is None
    torch.testing.assert_close(d.start_sigma, (1 + d.sigmas[0] ** 2).sqrt())


@pytest.mark.parametrize("sampler, scheduler, like, want", [
    ("Euler a", "Automatic", "a1111", ("Euler a", "Automatic")),
    ("DPM++ 2M", "Automatic", "a1111", ("DPM++ 2M", "Karras")),
    ("DPM++ 2M Karras", "Automatic", "a1111", ("DPM++ 2M", "Karras")),
    ("DPM++ 2M SDE", "Automatic", "a1111", ("DPM++ 2M SDE", "Exponential")),
    ("Euler", "Uniform", "a1111", ("Euler", "Uniform")),
    ("DDIM", "Automatic", "a1111", ("DDIM", None)),
    ("dpmpp_2m_karras", "Automatic", "diffusers", ("DPM++ 2M Karras", None)),
])
def test_infotext_names(sampler, scheduler, like, want):
    assert infotext_names(GenerateOptions(sampler=sampler, scheduler=scheduler, like=like)) == want


def test_a1111_truncates_and_diffusers_rounds():
    x = torch.tensor([0.999, 0.5, -0.3]).reshape(1, 3, 1, 1) * torch.ones(1, 3, 2, 2)
    truncated = np.asarray(tensor_to_pil(x, "truncate")[0])[0, 0]
    rounded = np.asarray(tensor_to_pil(x, "round")[0])[0, 0]
    want = (255.0 * ((np.array([0.999, 0.5, -0.3], np.float32) + 1) / 2)).astype(np.uint8)
    assert truncated.tolist() == want.tolist() and rounded.tolist() == [255, 191, 89]
    with pytest.raises(ValueError, match="rounding must be 'round' or 'truncate'"):
        tensor_to_pil(x, "floor")


@pytest.mark.parametrize("flags, message", [
    (["--sampler", "Euler b"], "unknown sampler 'Euler b'; valid names: 'DPM++ 2M', 'DPM++ SDE'"),
    (["--scheduler", "Karas"], "unknown schedule type 'Karas'; valid names: Automatic, Uniform, Karras,"),
    (["--sampler", "LMS", "--like", "diffusers"], "unknown sampler 'LMS'; valid names: 'DDPM', 'DDIM'"),
])
def test_cli_bad_names_in_one_line(tmp_path, capsys, flags, message):
    assert main(["txt2img", "a", "--steps", "1", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1

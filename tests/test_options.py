"""GenerateOptions: one set of defaults, and a validation that names each impossible setting."""
import dataclasses

import pytest

from nanoldm.options import IMG2IMG_STRENGTH, GenerateOptions, as_options


@pytest.mark.parametrize("field,value,message", [
    ("prompt", None, "prompt and negative prompt must be strings"),
    ("negative_prompt", 3, "prompt and negative prompt must be strings"),
    ("sampler", "Euler b", "unknown sampler 'Euler b'; valid names: 'DPM\\+\\+ 2M'"),
    ("scheduler", "Karas", "unknown schedule type 'Karas'; valid names: Automatic, Uniform, Karras"),
    ("like", "comfy", "unknown conventions 'comfy'; valid: a1111, diffusers"),
    ("steps", 0, "steps must be at least 1, got 0"),
    ("batch_size", 0, "batch size must be at least 1, got 0"),
    ("strength", 1.5, r"strength must be in \[0, 1\], got 1.5"),
    ("strength", -0.1, r"strength must be in \[0, 1\], got -0.1"),
    ("clip_skip", 0, "clip skip must be at least 1, got 0"),
    ("eta", -1.0, "eta must be at least 0, got -1.0"),
    ("width", 30, "width 30 is not a positive multiple of the latent factor 4"),
    ("height", 2, "height 2 is not a positive multiple of the latent factor 4"),
])
def test_each_bad_value_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        GenerateOptions(**{field: value}).validate(latent_factor=4)


def test_defaults_are_valid_and_a1111s():
    opts = GenerateOptions()
    opts.validate(latent_factor=8)
    assert (opts.sampler, opts.steps, opts.cfg_scale, opts.seed, opts.strength) == ("Euler a", 20, None, None,
                                                                                     IMG2IMG_STRENGTH)
    GenerateOptions(width=64, height=32, seed=-1, sampler="dpmpp_2m_karras").validate(latent_factor=8)


def test_options_are_frozen_and_as_options_replaces_fields():
    opts = GenerateOptions(steps=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.steps = 6
    assert as_options(opts, cfg_scale=3.0) == GenerateOptions(steps=5, cfg_scale=3.0)
    assert as_options(steps=2) == GenerateOptions(steps=2)
    with pytest.raises(TypeError):
        as_options(stepz=2)

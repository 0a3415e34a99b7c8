"""A model names the guidance scale it draws best at (``ModelConfig.cfg_scale``); every generation that names
none uses it (A1111's 7 for a model that names none), and the infotext records the scale used."""
import dataclasses

import numpy as np
import pytest
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.config import DEFAULT_CFG_SCALE, ModelConfig
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.conditioned import sample_condition
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY

PROMPT = "a red circle"


def _pipe(cfg_scale):
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, image_size=16, cfg_scale=cfg_scale)
    return Pipeline(LatentDiffusion.from_config(config, tokenizer=CLIPTokenizer.default()))


def _pixels(images):
    return np.stack([np.asarray(im) for im in images])


def _draw(pipe, **kw):
    return pipe.txt2img(PROMPT, "blue", steps=3, seed=5, batch_size=2, progress=False, **kw)


def test_config_carries_the_scale_and_old_configs_have_none():
    config = dataclasses.replace(TINY, cfg_scale=4.5)
    assert ModelConfig.from_json(config.to_json()) == config and config.default_cfg_scale == 4.5
    old = TINY.to_dict()
    del old["cfg_scale"]
    assert ModelConfig.from_dict(old).cfg_scale is None and ModelConfig.from_dict(old).default_cfg_scale == 7.0


@pytest.mark.parametrize("own", [3.0, None])
def test_generation_defaults_to_the_models_scale(own):
    pipe = _pipe(own)
    expected = DEFAULT_CFG_SCALE if own is None else own
    default = _draw(pipe)
    assert np.array_equal(_pixels(default), _pixels(_draw(pipe, cfg_scale=expected)))
    assert not np.array_equal(_pixels(default), _pixels(_draw(pipe, cfg_scale=expected + 2)))
    assert f"CFG scale: {expected:g}," in default[0].info["parameters"]


def test_the_scale_survives_saving(tmp_path):
    pipe = _pipe(3.0)
    save_model(pipe.model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").config.cfg_scale == 3.0


def test_conditioned_sampling_uses_the_models_scale():
    from nanoldm.conditioning import ClassEmbedding

    pipe = _pipe(3.0)
    module = ClassEmbedding(16, pipe.unet.cfg.context_dim)
    default = sample_condition(pipe, module, "red circle", batch_size=1, steps=3)
    same = sample_condition(pipe, module, "red circle", batch_size=1, steps=3, cfg_scale=3.0)
    assert np.array_equal(_pixels(default), _pixels(same)) and "CFG scale: 3," in default[0].info["parameters"]


def test_the_builtin_model_draws_at_4():
    from nanoldm.builtin import provenance

    from nanoldm.builtin import BUILTIN_MODEL

    assert load_model(BUILTIN_MODEL).config.cfg_scale == 4.0 == provenance()["cfg_scale"]

"""The LDM trainer on a tiny model and a few dozen 16x16 shapes images."""
import json

import pytest
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.config import PredictionType
from nanoldm.data.latents import build_latent_cache
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.training.ldm import LDMTask, with_prediction
from nanoldm.training.loop import TrainConfig, train



def frozen_state(model):
    return {f"{n}.{k}": v.clone() for n in ("vae", "text_encoder") for k, v in getattr(model, n).state_dict().items()}


def test_loss_falls_and_frozen_parts_stay(model, data, tmp_path):
    cache = build_latent_cache(*data, model)
    before = frozen_state(model)
    task = LDMTask(model, cache)
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, log_every=5, checkpoint_every=1000, out_dir=str(tmp_path))
    train(task, cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0], losses
    after = frozen_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.vae.parameters())


def test_condition_dropped_at_the_requested_rate(model, data):
    cache = build_latent_cache(*data, model)
    g = torch.Generator().manual_seed(0)
    assert abs(LDMTask(model, cache, cond_drop=0.1).drop_mask(20_000, g).float().mean().item() - 0.1) < 0.01
    assert not LDMTask(model, cache, cond_drop=0.0).drop_mask(100, g).any()
    # cond_drop=1: every context is the empty prompt's, so the captions no longer matter
    task = LDMTask(model, cache, cond_drop=1.0)
    cache.caption_index.zero_()
    a = task.loss(torch.arange(4), torch.Generator().manual_seed(1))
    cache.caption_index.fill_(len(cache.contexts) - 1)
    b = task.loss(torch.arange(4), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_v_prediction_target(model, data):
    task = LDMTask(with_prediction(model, PredictionType.V), build_latent_cache(*data, model))
    assert task.prediction is PredictionType.V and torch.isfinite(task.loss(torch.arange(4), torch.Generator()))


def test_cli_end_to_end_with_resume(model, tmp_path):
    base, out = tmp_path / "base.safetensors", tmp_path / "run"
    save_model(model, base)
    args = ["train", "ldm", "--data", "shapes", "--count", "16", "--model", str(base), "--out", str(out),
            "--batch-size", "4", "--warmup-steps", "0", "--checkpoint-every", "1", "--ema-decay", "0.9",
            "--sample-every", "2", "--sample-prompt", "a red circle", "--prediction", "v", "--device", "cpu",
            "--min-snr-gamma", "5"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    assert len(list((out / "cache").glob("latents-*.safetensors"))) == 1
    assert (out / "samples" / "step_0000004.png").exists()
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 4
    trained = load_model(out / "model.safetensors")
    assert trained.config.schedule.prediction_type is PredictionType.V and trained.config.image_size == 16
    images = Pipeline(trained).txt2img("a red circle", steps=2, seed=0, progress=False)
    assert images[0].size == (16, 16)


def test_min_snr_gamma_weights_each_sample(model, data, capsys):
    from nanoldm.diffusion.schedule import NoiseSchedule
    from nanoldm.training.ldm import min_snr_weight

    schedule = NoiseSchedule.from_config(model.config.schedule)
    t = torch.arange(schedule.num_train_timesteps)
    snr = schedule.snr(t)
    ab = schedule.alphas_cumprod
    torch.testing.assert_close(snr, (ab / (1 - ab)).float())
    assert (snr[1:] < snr[:-1]).all() and snr[0] > 1000 and snr[-1] < 0.01  # SD's schedule: clean to pure noise
    eps, v = (min_snr_weight(snr, 5.0, p) for p in (PredictionType.EPSILON, PredictionType.V))
    torch.testing.assert_close(eps, torch.where(snr > 5, 5 / snr, torch.ones_like(snr)))
    torch.testing.assert_close(v, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))

    cache = build_latent_cache(*data, model)
    plain = LDMTask(model, cache).loss(torch.arange(8), torch.Generator().manual_seed(1))
    huge = LDMTask(model, cache, min_snr_gamma=1e12).loss(torch.arange(8), torch.Generator().manual_seed(1))
    five = LDMTask(model, cache, min_snr_gamma=5.0).loss(torch.arange(8), torch.Generator().manual_seed(1))
    torch.testing.assert_close(huge, plain)  # every weight 1: the plain mean squared error
    assert five < plain  # the nearly clean steps count for less
    with pytest.raises(ValueError, match="--min-snr-gamma must be positive"):
        LDMTask(model, cache, min_snr_gamma=0.0)

"""The LDM trainer on a tiny model and a few dozen 16x16 shapes images."""
import json

import pytest
import torch

from nanoldm.checkpoint.formats import read_tensors
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.config import PredictionType
from nanoldm.data.latents import build_latent_cache
from nanoldm.data.sources import ImageSource
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.training.latent_setup import LatentOptions
from nanoldm.training.ldm import LDMTask, with_prediction
from nanoldm.training.ldm_trainer import LDMOptions, train_ldm
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


def test_v_prediction_target(model, data, monkeypatch):
    """The target is v = sqrt(ab_t) eps - sqrt(1 - ab_t) z0 exactly, for the loss's own draws of z0, t and eps."""
    task = LDMTask(with_prediction(model, PredictionType.V), build_latent_cache(*data, model))
    assert task.prediction is PredictionType.V
    seen = {}

    def zero_unet(z_t, t, context):  # predicts 0, so the loss is mean(target^2)
        seen.update(z_t=z_t, t=t)
        return torch.zeros_like(z_t)

    monkeypatch.setattr(task.model, "unet", zero_unet)
    indices = torch.arange(4)
    loss = task.loss(indices, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the loss's draws again, in its order (steps 1-3)
    z0 = task.cache.latents(indices, g)
    task.drop_mask(4, g)
    t = torch.randint(0, task.schedule.num_train_timesteps, (4,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    ab = task.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)  # float64
    v = (ab.sqrt() * eps - (1 - ab).sqrt() * z0).float()
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["z_t"], (ab.sqrt() * z0 + (1 - ab).sqrt() * eps).float())
    torch.testing.assert_close(loss, v.pow(2).mean())
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        prediction_type="v_prediction")
    torch.testing.assert_close(v, reference.get_velocity(z0, eps, t))


def test_train_ldm_from_python_matches_the_command_line(model, tmp_path):
    """``train_ldm`` with no argparse, and ``nanoldm train ldm`` with the same settings, make the same weights."""
    base = tmp_path / "base.safetensors"
    save_model(model, base)
    flags = ["--data", "shapes", "--count", "8", "--batch-size", "4", "--steps", "2", "--warmup-steps", "0",
             "--seed", "1", "--device", "cpu"]
    assert main(["train", "ldm", "--model", str(base), "--out", str(tmp_path / "cli"), *flags]) == 0
    loop = TrainConfig(steps=2, batch_size=4, lr=1e-4, warmup_steps=0, seed=1, out_dir=str(tmp_path / "py"))
    path = train_ldm(load_model(base), ImageSource("shapes", count=8), loop, LDMOptions(latent=LatentOptions(
        device="cpu")))
    assert path == tmp_path / "py" / "model.safetensors"
    a, b = read_tensors(tmp_path / "cli" / "model.safetensors")[0], read_tensors(path)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["unet.conv_in.weight"], model.unet.conv_in.weight.detach())  # it did train


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

"""The VAE trainer on a tiny autoencoder and 16x16 shapes: loss falls, PSNR rises, the plain AE has no KL,
vae.safetensors round-trips bit for bit, the sampleability picture, the CLI end to end with --resume, bad input."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nanoldm.autoencoder.autoencoder import AutoencoderKL  # noqa: E402
from nanoldm.cli.__main__ import main  # noqa: E402
from nanoldm.config import AutoencoderConfig  # noqa: E402
from nanoldm.training import TrainConfig, train  # noqa: E402
from nanoldm.checkpoint.parts import load_vae  # noqa: E402
from nanoldm.data.sources import shapes_images  # noqa: E402
from nanoldm.training.vae_pictures import sampleability_picture  # noqa: E402
from nanoldm.training.vae_task import VAETask, psnr  # noqa: E402

TINY = AutoencoderConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, norm_groups=8)
TINY_ARGS = ["--base-channels", "8", "--channel-mult", "1,2", "--norm-groups", "8"]


@pytest.fixture(scope="module")
def data():
    return shapes_images(64, 16, seed=0).unit(), shapes_images(8, 16, seed=0, start=64).unit()


def _task(data, cfg=TINY, **kw) -> VAETask:
    torch.manual_seed(0)
    return VAETask(AutoencoderKL(cfg), *data, **kw)


def test_shapes_images_are_16px_in_range(data):
    images, held = data
    assert images.shape == (64, 3, 16, 16) and held.shape == (8, 3, 16, 16)
    assert images.min() >= -1 and images.max() <= 1


def test_loss_falls_and_psnr_rises(data, tmp_path):
    task = _task(data)
    before = psnr(task.vae, task.held_out)
    g = torch.Generator().manual_seed(0)
    first = task.loss(task.images[:16], g).item()
    train(task, TrainConfig(steps=40, batch_size=16, lr=3e-3, out_dir=str(tmp_path), checkpoint_every=1000),
          progress=False)
    last = task.loss(task.images[:16], g).item()
    after = psnr(task.vae, task.held_out)
    assert last < 0.7 * first, (first, last)
    assert after > before + 3, (before, after)


def test_plain_ae_has_zero_kl(data):
    task = _task(data, replace(TINY, variational=False), kl_weight=1.0)
    terms = task.terms(task.images[:4])
    assert terms["kl"].item() == 0.0 and torch.equal(terms["loss"], terms["rec"])
    vae_terms = _task(data).terms(task.images[:4], torch.Generator().manual_seed(0))
    assert vae_terms["kl"].item() > 0


def test_sampleability_picture_size():
    torch.manual_seed(0)
    vae, ae = AutoencoderKL(TINY), AutoencoderKL(replace(TINY, variational=False))
    picture = sampleability_picture(vae, ae, n=5, generator=torch.Generator().manual_seed(0), size=16, zoom=2)
    assert picture.size == (40 + 5 * 32, 2 * 32) and picture.mode == "RGB"


def _cli(out: Path, *extra: str) -> int:
    return main(["train", "vae", "--data", "shapes", "--count", "24", "--size", "16", "--out", str(out),
                 "--batch-size", "8", "--warmup-steps", "0", "--log-every", "1", *TINY_ARGS, *extra])


def test_cli_end_to_end_resume_and_compare(tmp_path, capsys):
    assert _cli(tmp_path / "ae", "--steps", "3", "--plain-ae") == 0
    assert _cli(tmp_path / "vae", "--steps", "2") == 0
    assert _cli(tmp_path / "vae", "--steps", "4", "--resume", "--compare-ae", str(tmp_path / "ae/vae.safetensors")) == 0
    assert "held-out PSNR" in capsys.readouterr().out
    log = [json.loads(line) for line in (tmp_path / "vae/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert log[-1]["step"] == 4 and "held_out_psnr" in log[-1]
    vae = load_vae(tmp_path / "vae/vae.safetensors")
    assert vae.cfg.variational and vae.cfg.scale_factor != AutoencoderConfig().scale_factor
    assert not load_vae(tmp_path / "ae/vae.safetensors").cfg.variational
    assert (tmp_path / "vae/latent_samples.png").exists()


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "vae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert _cli(tmp_path / "o2", "--loss", "l3") == 2
    assert "unknown reconstruction loss 'l3'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        _task((torch.zeros(1, 3, 16, 16),) * 2, loss="huber")


def test_patch_discriminator_trains_beside_the_autoencoder_and_resumes_exactly(data, tmp_path):
    """Before --disc-start the loss is the plain one; after, the discriminator's own hinge loss trains only the
    discriminator and the adversarial term only the autoencoder; a run stopped and resumed equals one that was not."""
    from nanoldm.autoencoder.discriminator import PatchDiscriminator

    x = data[0][:4]
    disc = PatchDiscriminator()
    x_hat = (x * 0.5).requires_grad_()
    disc.generator_loss(x_hat).backward()
    assert all(p.grad is None for p in disc.parameters()) and x_hat.grad.abs().sum() > 0
    disc.discriminator_loss(x, x_hat).backward()
    assert all(p.grad is not None for p in disc.parameters())

    def run(out, steps, resume=False, task=None):
        torch.manual_seed(0)
        task = task or _task(data, disc_weight=0.5, disc_start=2)
        train(task, TrainConfig(steps=steps, batch_size=8, lr=1e-3, out_dir=str(out), checkpoint_every=1000),
              resume=resume, progress=False)
        return task

    g = torch.Generator().manual_seed(0)
    fresh = _task(data, disc_weight=0.5, disc_start=2)
    assert set(fresh.terms(x, g)) == {"loss", "rec", "kl"}  # step 0 < disc_start
    fresh.set_step(2)
    assert {"g_adv", "d_loss"} <= set(fresh.terms(x, g))
    whole = run(tmp_path / "a", 4)
    run(tmp_path / "b", 3)
    resumed = run(tmp_path / "b", 4, resume=True)
    for module in ("vae", "discriminator"):
        for (name, a), b in zip(whole.modules()[module].state_dict().items(),
                                resumed.modules()[module].state_dict().values()):
            assert torch.equal(a, b), (module, name)
    initial = _task(data, disc_weight=0.5, disc_start=2).discriminator.state_dict()  # the same seeded init
    assert any(not torch.equal(a, initial[k]) for k, a in whole.discriminator.state_dict().items())


def test_extra_data_folders_train_too_and_report_their_own_psnr(tmp_path, capsys):
    from nanoldm.data.export import export_shapes
    from nanoldm.data.shapes import ShapesWorld

    light = export_shapes(ShapesWorld(count=20, seed=1), tmp_path / "light", progress=False)
    dark = export_shapes(ShapesWorld(count=10, seed=2, style="dark"), tmp_path / "dark", progress=False)
    args = ["train", "vae", "--data", str(light), "--extra-data", str(dark), "--size", "16", "--steps", "1",
            "--batch-size", "4", "--out", str(tmp_path / "vae"), *TINY_ARGS]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"{light}: held-out PSNR" in printed and "over 2 images" in printed  # a tenth of each folder held out
    assert f"{dark}: held-out PSNR" in printed and "over 1 images" in printed
    assert "held-out PSNR" in printed and "over 3 images" in printed  # and over both together
    args[5] = str(tmp_path / "missing")
    assert main(args) == 2
    assert "missing" in capsys.readouterr().err


def test_decoder_only_finetune_keeps_the_latent_space_and_the_rest_of_the_model(tiny_model_16px, tmp_path, capsys):
    """--init a whole model --decoder-only: only the decoder (and post_quant_conv) move; the encoder, its
    scale_factor, the UNet and the text encoder are bit-identical in OUT/model.safetensors."""
    from nanoldm.checkpoint.load import load_model
    from nanoldm.checkpoint.save import save_model

    base = tmp_path / "base.safetensors"
    tiny_model_16px.vae.cfg = replace(tiny_model_16px.vae.cfg, scale_factor=0.5)
    tiny_model_16px.config = replace(tiny_model_16px.config, vae=tiny_model_16px.vae.cfg)
    save_model(tiny_model_16px, base)
    out = tmp_path / "ft"
    cmd = ["train", "vae", "--init", str(base), "--data", "shapes", "--count", "16", "--size", "16", "--steps", "3",
           "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "0", "--out", str(out)]
    assert main([*cmd, "--decoder-only"]) == 0
    assert "the --init model with this VAE" in capsys.readouterr().out
    before, after = load_model(base), load_model(out / "model.safetensors")
    assert after.vae.cfg.scale_factor == after.config.vae.scale_factor == 0.5
    for name, value in after.state_dict().items():
        trained = name.startswith(("vae.decoder.", "vae.post_quant_conv."))
        assert torch.equal(value, before.state_dict()[name]) != trained, name
    vae = load_vae(out / "vae.safetensors")
    assert all(torch.equal(v, after.vae.state_dict()[k]) for k, v in vae.state_dict().items())

    # from a vae.safetensors, without --decoder-only: the encoder trains too, no model file is written
    assert main(["train", "vae", "--init", str(out / "vae.safetensors"), "--data", "shapes", "--count", "16",
                 "--size", "16", "--steps", "2", "--batch-size", "4", "--lr", "1e-2", "--out", str(tmp_path / "all")]) == 0
    full = load_vae(tmp_path / "all/vae.safetensors")
    assert not torch.equal(full.encoder.conv_in.weight, vae.encoder.conv_in.weight)
    assert not (tmp_path / "all/model.safetensors").exists()

    assert main(["train", "vae", "--decoder-only", "--data", "shapes", "--out", str(tmp_path / "x")]) == 2
    assert "--decoder-only finetunes an existing decoder: it needs --init" in capsys.readouterr().err
    assert main([*cmd, "--base-channels", "8"]) == 2
    assert "drop --base-channels" in capsys.readouterr().err

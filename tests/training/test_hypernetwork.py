"""The hypernetwork trainer on the tiny model and a few dozen 16x16 shapes images: only the hypernetwork learns,
the loss falls, a resumed run ends bit for bit where an uninterrupted one does, and the CLI writes A1111's file."""
import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.data.latents import build_latent_cache
from nanoldm.finetune.hypernetwork import Hypernetwork, HypernetworkOptions, default_widths
from nanoldm.finetune.hypernetwork_file import load_hypernetwork
from nanoldm.pipelines.infotext import model_hash
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.training.hypernetwork import HypernetworkTask
from nanoldm.training.loop import TrainConfig, train


def new_hypernetwork(model, **options) -> Hypernetwork:
    torch.manual_seed(7)
    return Hypernetwork(default_widths(model.unet.cfg), HypernetworkOptions(activation_func="relu", **options))


def fixed_loss(task) -> float:
    """The loss on every example under fixed noise, without dropout."""
    task.hypernetwork.eval()
    with torch.no_grad():
        loss = sum(task.loss(torch.arange(24), torch.Generator().manual_seed(s)).item() for s in range(4)) / 4
    task.hypernetwork.train()
    return loss


def test_only_the_hypernetwork_trains_and_the_loss_falls(model, data, tmp_path):
    cache = build_latent_cache(*data, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # UNet, VAE and text encoder
    hn = new_hypernetwork(model)
    start = {k: v.clone() for k, v in hn.state_dict().items()}
    task = HypernetworkTask(model, cache, hn)
    loss0 = fixed_loss(task)
    train(task, TrainConfig(steps=30, batch_size=8, lr=1e-2, checkpoint_every=1000, out_dir=str(tmp_path)),
          progress=False)
    assert fixed_loss(task) < 0.95 * loss0
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(not torch.equal(start[k], v) for k, v in hn.state_dict().items() if k.endswith("weight"))


def test_resume_equals_uninterrupted(model, data, tmp_path):
    cache = build_latent_cache(*data, model)
    options = dict(add_layer_norm=True, use_dropout=True, dropout_structure=(0, 0.2, 0))
    cfg = lambda out, steps: TrainConfig(steps=steps, batch_size=4, lr=1e-2, checkpoint_every=100,  # noqa: E731
                                         out_dir=str(out))

    whole = new_hypernetwork(model, **options)
    train(HypernetworkTask(model, cache, whole), cfg(tmp_path / "whole", 4), progress=False)
    cut = new_hypernetwork(model, **options)
    train(HypernetworkTask(model, cache, cut), cfg(tmp_path / "cut", 2), progress=False)
    resumed = new_hypernetwork(model, **options)
    train(HypernetworkTask(model, cache, resumed), cfg(tmp_path / "cut", 4), resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), cut.state_dict().values()))


def test_cli_writes_a1111_files_and_resumes(model, tmp_path):
    base, out = tmp_path / "base.safetensors", tmp_path / "run"
    save_model(model, base)
    args = ["train", "hypernetwork", "--model", str(base), "--data", "shapes", "--count", "8", "--name", "my style",
            "--layer-structure", "1,2,1", "--activation", "relu", "--layer-norm", "--dropout",
            "--dropout-structure", "0,0.1,0", "--weight-init", "XavierNormal", "--batch-size", "4",
            "--warmup-steps", "0", "--device", "cpu", "--out", str(out)]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "3", "--resume"]) == 0
    raw = torch.load(out / "my style.pt", map_location="cpu", weights_only=True)
    assert sorted(k for k in raw if isinstance(k, int)) == [32, 64]
    assert (raw["name"], raw["step"], raw["activation_func"], raw["is_layer_norm"], raw["weight_initialization"],
            raw["dropout_structure"], raw["sd_checkpoint"], raw["sd_checkpoint_name"]) == \
        ("my style", 3, "relu", True, "XavierNormal", [0.0, 0.1, 0.0], model_hash(base), "base")
    pt, st = load_hypernetwork(out / "my style.pt"), load_hypernetwork(out / "my style.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(pt.state_dict().values(), st.state_dict().values()))
    pipe = Pipeline(load_model(base), hypernetwork_dir=out)
    images = pipe.txt2img("a red circle <hypernet:my style:1>", steps=1, seed=0, progress=False)
    assert images[0].size == (16, 16)


def test_bad_input_is_a_one_line_error(model, tmp_path, capsys):
    base, empty = tmp_path / "base.safetensors", tmp_path / "empty"
    save_model(model, base)
    empty.mkdir()
    common = ["--name", "x", "--out", str(tmp_path / "run"), "--steps", "1", "--device", "cpu"]
    assert main(["train", "hypernetwork", "--model", str(base), "--data", str(empty)] + common) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(["train", "hypernetwork", "--model", str(tmp_path / "nope.ckpt"), "--data", "shapes"] + common) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["train", "hypernetwork", "--model", str(base), "--data", "shapes", "--layer-structure", "2,1"]
                + common) == 2
    assert "layer_structure must start and end with 1" in capsys.readouterr().err

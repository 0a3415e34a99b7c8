"""Class, layout and mask conditions: their tokens and channels, and a few LDM training steps with each."""
import json

import pytest
import torch

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.conditioning import ClassEmbedding, LayoutEncoder, inpaint_concat
from nanoldm.data.latents import build_latent_cache
from nanoldm.checkpoint.parts import load_condition
from nanoldm.data.sources import shapes_conditions, shapes_images
from nanoldm.training.ldm_conditions import ClassLDMTask, LayoutLDMTask, MaskLDMTask, to_inpainting
from nanoldm.training.loop import TrainConfig, train

COUNT = 24


def test_class_tokens_and_null_dropout():
    emb = ClassEmbedding(30, 32)
    labels = torch.tensor([0, 5, -1, 7])
    out = emb(labels)
    assert out.shape == (4, 1, 32)
    assert torch.equal(out[2], emb.null(1)[0])  # no class -> the null class
    dropped = emb(labels, drop=torch.tensor([True, False, False, True]))
    assert torch.equal(dropped[0], emb.null(1)[0]) and torch.equal(dropped[1], out[1])


def test_layout_tokens_padding_dropout_and_boxes():
    enc = LayoutEncoder(30, 32, max_objects=3, fourier_bands=6)
    classes = torch.tensor([[1, 2], [4, -1]])
    boxes = torch.tensor([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], [[0.2, 0.3, 0.5, 0.6], [0, 0, 0, 0]]])
    out = enc(classes, boxes)
    null = enc.null(1)[0, 0]
    assert out.shape == (2, 3, 32)
    assert torch.equal(out[0, 2], null) and torch.equal(out[1, 1], null) and not torch.equal(out[0, 0], null)
    assert torch.equal(enc(classes, boxes, drop=torch.tensor([True, False]))[0], enc.null(1)[0])
    # same class, boxes a little apart -> different tokens
    a = enc(torch.tensor([[3]]), torch.tensor([[[0.10, 0.10, 0.30, 0.30]]]))
    b = enc(torch.tensor([[3]]), torch.tensor([[[0.12, 0.10, 0.32, 0.30]]]))
    assert (a - b)[0, 0].norm() > 1e-3
    with pytest.raises(ValueError):
        enc(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, 4))


def test_inpaint_concat_layout():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1
    out = inpaint_concat(mask, torch.randn(1, 4, 4, 4))
    assert out.shape == (1, 5, 4, 4) and out[0, 0, :2].eq(1).all() and out[0, 0, 2:].eq(0).all()


@pytest.fixture(scope="module")
def data():
    images = shapes_images(COUNT, 16, seed=0)
    pixels, captions = images.pixels, images.captions
    return pixels, captions, shapes_conditions(16, count=COUNT, seed=0)


def make_task(kind, model, data):
    pixels, captions, conds = data
    if kind == "mask":
        model = to_inpainting(model)
    cache = build_latent_cache(pixels, captions, model)
    width = model.unet.cfg.context_dim
    if kind == "class":
        return ClassLDMTask(model, cache, conds.labels, ClassEmbedding(30, width))
    if kind == "layout":
        return LayoutLDMTask(model, cache, conds.classes, conds.boxes, LayoutEncoder(30, width))
    return MaskLDMTask(model, cache, pixels, conds.masks, conds.classes >= 0)


@pytest.mark.parametrize("kind", ["class", "layout", "mask"])
def test_loss_falls(kind, tiny_model_16px, data, tmp_path):
    task = make_task(kind, tiny_model_16px, data)
    before = {k: v.clone() for k, v in task.modules().get("condition", torch.nn.Identity()).state_dict().items()}
    assert tiny_model_16px.unet.cfg.in_channels == (9 if kind == "mask" else 4)
    cfg = TrainConfig(steps=30, batch_size=8, lr=2e-3, log_every=5, checkpoint_every=1000, out_dir=str(tmp_path))
    train(task, cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.7 * losses[0], losses
    if kind != "mask":  # the condition module is trained jointly
        assert "condition" in task.modules()
        after = task.condition.state_dict()
        assert before and all(not torch.equal(before[k], after[k]) for k in before)
    assert task.sample(0).size == (16 * min(4, COUNT), 16)


def test_cli_class(tiny_model_16px, tmp_path):
    base, out = tmp_path / "base.safetensors", tmp_path / "run"
    save_model(tiny_model_16px, base)
    args = ["train", "ldm", "--condition", "class", "--data", "shapes", "--count", "16", "--model", str(base),
            "--out", str(out), "--batch-size", "4", "--warmup-steps", "0", "--ema-decay", "0.9",
            "--sample-every", "2", "--device", "cpu", "--steps", "2"]
    assert main(args) == 0
    assert (out / "model.safetensors").exists() and (out / "samples" / "step_0000002.png").exists()
    cond = load_condition(out / "condition.safetensors")
    assert isinstance(cond, ClassEmbedding) and cond(torch.tensor([1])).shape == (1, 1, 32)

"""The CLIP trainer and the captioner on a tiny CLIP: the contrastive loss falls, matched pairs outscore
mismatched ones after a short training, clip.safetensors round-trips, the caption enumeration is complete,
``nanoldm caption`` writes .txt only for uncaptioned images, and bad input gives clear errors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nanoldm.cli.__main__ import main  # noqa: E402
from nanoldm.config import TextEncoderConfig  # noqa: E402
from nanoldm.data.shapes import ShapesWorld  # noqa: E402
from nanoldm.evaluation.captioner import Captioner, all_captions, same_caption  # noqa: E402
from nanoldm.checkpoint.parts import load_clip, save_clip  # noqa: E402
from nanoldm.text.clip_model import CLIP, CLIPConfig  # noqa: E402
from nanoldm.text.tokenizer import CLIPTokenizer  # noqa: E402
from nanoldm.training import TrainConfig, train  # noqa: E402
from nanoldm.data.sources import shapes_images  # noqa: E402
from nanoldm.training.clip import CLIPTask  # noqa: E402

TINY = CLIPConfig(text=TextEncoderConfig(width=32, layers=1, heads=2, mlp_dim=64), embed_dim=32,
                  image_channels=(8, 16, 16))


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory):
    """A tiny CLIP trained 60 steps on 8 shapes pairs, and its loss log."""
    torch.manual_seed(0)
    pairs = shapes_images(8, 32, seed=0)
    images, captions = pairs.unit(), pairs.captions
    task = CLIPTask(CLIP(TINY), images, captions, tokenizer)
    out = tmp_path_factory.mktemp("clip")
    cfg = TrainConfig(steps=60, batch_size=8, lr=3e-3, log_every=10, checkpoint_every=1000, out_dir=str(out))
    first = task.loss(task.batch(list(range(8))), torch.Generator()).item()
    train(task, cfg, progress=False)
    return task, first, out


def test_contrastive_loss_falls(trained):
    task, first, _ = trained
    last = task.loss(task.batch(list(range(8))), torch.Generator()).item()
    assert last < 0.5 * first


def test_matched_pairs_score_highest(trained, tokenizer):
    task, _, _ = trained
    model = task.model.eval()
    with torch.no_grad():
        sims = model.encode_image(task.images) @ model.encode_text(task.tokens, tokenizer.eos_id).T  # (8, 8)
    assert (sims.argmax(1) == torch.arange(8)).all()
    assert sims.diagonal().mean() > sims.mean() + 0.1


def test_text_embedding_ignores_padding(tokenizer):
    model = CLIP(TINY).eval()
    ids = tokenizer(["a red circle", "a large blue square at the top left"])
    with torch.no_grad():
        full, short = model.encode_text(ids, tokenizer.eos_id), model.encode_text(ids[:1, :10], tokenizer.eos_id)
    assert full.shape == (2, 32)
    torch.testing.assert_close(full[:1], short)


def test_all_captions_cover_the_shapes_world():
    candidates = all_captions()
    assert len(candidates) == 324 + 1296 and len(set(candidates)) == len(candidates)
    assert len(all_captions(pair_sizes=True)) == 324 + 36 * 36 * 4
    assert all(s.caption in set(candidates) for s in ShapesWorld(count=200))
    assert same_caption("a red circle left of a blue square", "a blue square right of a red circle")
    assert not same_caption("a red circle left of a blue square", "a blue square left of a red circle")


def test_captioner_picks_from_candidates(trained):
    task, _, _ = trained
    candidates = all_captions()[:50]
    captioner = Captioner(task.model, candidates)
    chosen = captioner(task.images[:3])
    assert len(chosen) == 3 and all(c in candidates for c in chosen)


def _folder(tmp_path: Path, captioned: int, bare: int) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, s in enumerate(ShapesWorld(count=captioned + bare)):
        s.pil().save(folder / f"{i}.png")
        if i < captioned:
            (folder / f"{i}.txt").write_text("my own caption\n")
    return folder


def test_caption_command_fills_only_missing(trained, tmp_path):
    _, _, out = trained
    folder = _folder(tmp_path, captioned=2, bare=3)
    save_clip(tmp_path / "clip.safetensors", trained[0].model)
    assert main(["caption", str(folder), "--clip", str(tmp_path / "clip.safetensors")]) == 0
    for i in range(2):
        assert (folder / f"{i}.txt").read_text() == "my own caption\n"
    candidates = set(all_captions())
    for i in range(2, 5):
        assert (folder / f"{i}.txt").read_text().strip() in candidates


def test_caption_command_bad_input(tmp_path, capsys):
    folder = _folder(tmp_path, captioned=0, bare=1)
    assert main(["caption", str(folder), "--clip", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such CLIP file" in capsys.readouterr().err
    save_clip(tmp_path / "clip.safetensors", CLIP(TINY))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["caption", str(empty), "--clip", str(tmp_path / "clip.safetensors")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert not (folder / "0.txt").exists()


def test_train_command_refuses_captionless_folder(tmp_path, capsys):
    folder = _folder(tmp_path, captioned=0, bare=2)
    assert main(["train", "clip", "--data", str(folder), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "has a caption" in capsys.readouterr().err


def test_train_command_shapes_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "clip", "--data", "shapes", "--count", "16", "--out", str(out), "--steps", "2",
                 "--batch-size", "8", "--image-channels", "8,16", "--embed-dim", "16"]) == 0
    assert "held-out captions exactly right" in capsys.readouterr().out
    assert load_clip(out / "clip.safetensors").cfg.image_channels == (8, 16)


def test_caption_command_reports_against_withheld_captions(trained, tmp_path, capsys):
    """An export with --uncaptioned keeps the withheld captions aside; the caption command scores itself on them."""
    from nanoldm.data.export import export_shapes
    from nanoldm.data.shapes import ShapesWorld

    export_shapes(ShapesWorld(count=8, seed=4), tmp_path / "d", uncaptioned=0.5, progress=False)
    save_clip(tmp_path / "clip.safetensors", trained[0].model)
    assert main(["caption", str(tmp_path / "d"), "--clip", str(tmp_path / "clip.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 captions (4 images already had one)" in out
    assert "captions right against the withheld reference:" in out and "of 4)" in out


def test_same_caption_reads_shape_as_any_shape():
    from nanoldm.evaluation.captioner import same_caption

    assert same_caption("a small red shape at the top", "a small red star at the top")
    assert same_caption("a red circle left of a blue shape", "a blue square right of a red circle")
    assert not same_caption("a small red shape at the top", "a large red star at the top")
    assert not same_caption("a red circle at the top", "a red square at the top")
    assert not same_caption("a red shape left of a blue shape", "a red shape above a blue shape")

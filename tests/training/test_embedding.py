"""The textual-inversion trainer on a tiny model and 16x16 shapes images: only the new rows change, the loss
falls, a stopped run resumes to the same vectors, the CLI writes files every loader reads."""
import copy
import dataclasses

import pytest
import torch

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.data.latents import build_latent_cache
from nanoldm.finetune.embedding_files import read_embedding
from nanoldm.finetune.textual_inversion import load_textual_inversion
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.training.embedding import EmbeddingTask, init_vectors, token_captions
from nanoldm.data.sources import shapes_images
from nanoldm.training.loop import TrainConfig, train
from tests.conftest import TINY

TOKEN = "<blob>"


@pytest.fixture(scope="module")
def data():
    images = shapes_images(16, 16, seed=0)
    return images.pixels, images.captions


def make_model(tokenizer, *, strong_cross_attention: bool = False) -> LatentDiffusion:
    """A random TINY model; ``strong_cross_attention`` scales the UNet's cross-attention so that the context
    matters enough for a few steps of textual inversion to show (a random UNet barely listens to it)."""
    torch.manual_seed(0)
    model = LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=16), tokenizer=copy.deepcopy(tokenizer))
    if strong_cross_attention:
        with torch.no_grad():
            for name, module in model.unet.named_modules():
                if name.endswith("attn2"):
                    module.to_k.weight *= 4
                    module.to_out[0].weight *= 10
    return model


def make_task(model, data, vectors=2):
    pixels, captions = data
    cache = build_latent_cache(pixels, captions, model)
    return EmbeddingTask(model, cache, token_captions(captions, "circle", TOKEN), TOKEN,
                         init_vectors(model, "circle", vectors))


def config(out, **kw):
    return TrainConfig(**{**dict(steps=6, batch_size=4, lr=0.05, log_every=2, checkpoint_every=100, out_dir=str(out)),
                          **kw})


def test_captions_and_init_vectors(tokenizer):
    captions = ["a red circle at the top", "Circle, circles and a CIRCLE", "a blue square", None, " "]
    assert token_captions(captions, "circle", "<c>") == [
        "a red <c> at the top", "<c>, circles and a <c>", "a <c>, a blue square", "a <c>", "a <c>"]
    model = make_model(tokenizer)
    table = model.text_encoder.embeddings.token_embedding.weight
    circle, red = tokenizer.encode("circle")[0], tokenizer.encode("red")[0]
    assert torch.equal(init_vectors(model, "circle", 3), table[[circle] * 3])  # one word, repeated
    assert torch.equal(init_vectors(model, "red circle", 3), table[[red, red, circle]])  # A1111: i * T // N
    with pytest.raises(ValueError, match="no tokens"):
        init_vectors(model, " ", 1)


def test_only_the_new_rows_change_and_loss_falls(tokenizer, data, tmp_path):
    model = make_model(tokenizer, strong_cross_attention=True)
    before = {f"{n}.{k}": v.clone() for n, m in model.modules().items() for k, v in m.state_dict().items()}
    task = make_task(model, data)
    initial = task.vectors.vectors.detach().clone()

    def fixed_loss():  # the same noise, timesteps and images before and after
        with torch.no_grad():
            return sum(task.loss(torch.arange(16), torch.Generator().manual_seed(s)).item() for s in range(4))

    start = fixed_loss()
    train(task, config(tmp_path, steps=30, batch_size=8, lr=0.1, warmup_steps=0), progress=False)
    assert fixed_loss() < 0.98 * start
    vectors = task.finish()
    assert not torch.equal(vectors, initial)
    after = {f"{n}.{k}": v for n, m in model.modules().items() for k, v in m.state_dict().items()}
    key = "text_encoder.embeddings.token_embedding.weight"
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before if k != key)
    assert torch.equal(after[key][:49408], before[key]) and torch.equal(after[key][49408:], vectors)
    assert isinstance(model.text_encoder.embeddings.token_embedding, torch.nn.Embedding)


def test_resume_after_stop_equals_an_uninterrupted_run(tokenizer, data, tmp_path):
    full = make_task(make_model(tokenizer), data)
    initial = full.vectors.vectors.detach().clone()
    train(full, config(tmp_path / "full", ema_decay=0.9), progress=False)
    cut = make_task(make_model(tokenizer), data)
    train(cut, config(tmp_path / "cut", ema_decay=0.9, steps=3), progress=False)
    resumed = make_task(make_model(tokenizer), data)
    train(resumed, config(tmp_path / "cut", ema_decay=0.9), resume=True, progress=False)
    trained = full.finish(tmp_path / "full" / "checkpoint.safetensors")
    assert not torch.equal(trained, initial)
    assert torch.equal(trained, resumed.finish(tmp_path / "cut" / "checkpoint.safetensors"))


def test_cli_end_to_end_with_resume(tokenizer, tmp_path):
    base, out = tmp_path / "base.safetensors", tmp_path / "run"
    save_model(make_model(tokenizer), base)
    args = ["train", "embedding", "--data", "shapes", "--count", "8", "--model", str(base), "--token", TOKEN,
            "--init-word", "circle", "--vectors", "2", "--out", str(out), "--batch-size", "4",
            "--warmup-steps", "0", "--checkpoint-every", "1", "--sample-every", "2", "--device", "cpu"]
    assert main(args + ["--steps", "2"]) == 0
    assert main(args + ["--steps", "4", "--resume"]) == 0
    assert (out / "samples" / "step_0000004.png").exists()
    files = [out / "blob.pt", out / "blob.safetensors", out / "learned_embeds.safetensors"]
    embeddings = [read_embedding(f) for f in files]
    assert all(e.name == TOKEN and e.vectors.shape == (2, 32) for e in embeddings)
    assert all(torch.equal(e.vectors, embeddings[0].vectors) for e in embeddings)
    assert embeddings[0].step == 4 and embeddings[0].sd_checkpoint_name == "base"
    model = make_model(tokenizer)
    load_textual_inversion(model, files[2])
    images = Pipeline(model).txt2img(f"a red {TOKEN}", steps=2, seed=0, progress=False)
    assert images[0].size == (16, 16)


def test_cli_bad_input(tokenizer, tmp_path, capsys):
    base = tmp_path / "base.safetensors"
    save_model(make_model(tokenizer), base)
    (tmp_path / "empty").mkdir()
    common = ["train", "embedding", "--token", TOKEN, "--init-word", "circle", "--out", str(tmp_path / "run")]
    assert main(common + ["--data", str(tmp_path / "empty"), "--model", str(base)]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(common + ["--data", "shapes", "--model", str(tmp_path / "nowhere.safetensors")]) == 2
    assert "nowhere.safetensors" in capsys.readouterr().err
    assert main(common[:3] + ["<>"] + common[4:] + ["--data", "shapes", "--model", str(base)]) == 2
    assert "no letters or digits" in capsys.readouterr().err

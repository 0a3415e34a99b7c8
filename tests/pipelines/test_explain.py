"""See inside: the recorded attention is the run's real softmax(QK^T / sqrt(d)), recording changes no pixel, maps
sum to 1 over the context tokens, words map back to their context columns, and the trajectory ends at the image."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nanoldm.cli.__main__ import main
from nanoldm.layers.attention import Attention
from nanoldm.layers.attention_record import recording_attention
from nanoldm.layers.frozen import frozen_weights
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.explain import _layer_grid, cross_attention_layers, explain, prompt_words
from nanoldm.pipelines.explain_pictures import heat, strip_picture, word_picture
from nanoldm.pipelines.infotext import read_png_infotext
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.unet.unet import UNet
from tests.conftest import TINY, TINY_UNET

PROMPT = "a red circle at the top left, photorealistic"


def independent_probabilities(layer: Attention, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) from the layer's inputs, by hand, averaged over heads. Shapes: -> (B, N, M)."""
    B, N, _ = x.shape
    q = (x @ layer.to_q.weight.T).reshape(B, N, layer.heads, -1).transpose(1, 2)  # (B, h, N, d)
    k = (context @ layer.to_k.weight.T).reshape(B, context.shape[1], layer.heads, -1).transpose(1, 2)
    scores = torch.einsum("bhnd,bhmd->bhnm", q.double(), k.double()) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1).mean(1)


@pytest.mark.parametrize("fast", [False, True])
def test_recorded_maps_are_the_softmax_of_the_layers_inputs(fast):
    """Every cross-attention call's inputs are captured by a hook; the recorder's sum equals the independently
    computed probabilities summed over the calls, on the plain path and on the fast path (kept K/V, a guided
    batch [uncond; cond] with each context repeated)."""
    torch.manual_seed(0)
    unet = UNet(TINY_UNET).eval()
    layers = cross_attention_layers(unet)
    assert len(layers) == 6 and all(layer.to_k.in_features == TINY_UNET.context_dim for layer in layers)
    inputs = {id(layer): [] for layer in layers}
    hooks = [layer.register_forward_pre_hook(lambda m, args: inputs[id(m)].append(args)) for layer in layers]
    x = torch.randn(2, 4, 8, 8)
    context = torch.cat([torch.randn(1, 7, 32).expand(2, -1, -1), torch.randn(1, 7, 32).expand(2, -1, -1)])
    with recording_attention(layers) as recorder, (frozen_weights() if fast else torch.no_grad()):
        for t in (900, 500):
            unet(torch.cat([x, x]), torch.tensor([t] * 4), context)
    for hook in hooks:
        hook.remove()
    for layer in layers:
        expected = sum(independent_probabilities(layer, *args) for args in inputs[id(layer)])
        record = recorder.record(layer)
        assert record.calls == 2
        torch.testing.assert_close(record.total.double(), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(record.mean.sum(-1), torch.ones(4, record.total.shape[1]))


def test_the_recorder_returns_the_layers_own_output_and_watches_only_its_layers():
    torch.manual_seed(0)
    attn, other = Attention(16, context_dim=12, heads=2, head_dim=8), Attention(16, context_dim=12, heads=2, head_dim=8)
    x, context = torch.randn(3, 9, 16), torch.randn(3, 5, 12)
    with torch.no_grad():
        expected = attn(x, context)
        with recording_attention([attn]) as recorder:
            got = attn(x, context)
            other(x, context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert recorder.record(other) is None and recorder.record(attn).total.shape == (3, 9, 5)
    with torch.no_grad():  # the block is over: nothing more is recorded
        attn(x, context)
    assert recorder.record(attn).calls == 1


@pytest.fixture(scope="module")
def explained(tokenizer):
    """A random tiny model: pixels and probabilities, not meaning, are tested."""
    torch.manual_seed(0)
    pipe = Pipeline(LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=16), tokenizer=tokenizer))
    opts = GenerateOptions(prompt=PROMPT, negative_prompt="blurry", steps=4, seed=3, batch_size=2, width=16, height=24)
    return pipe, opts, explain(pipe, opts)


def test_recording_changes_no_pixel_and_the_trajectory_ends_at_the_image(explained):
    pipe, opts, explanations = explained
    plain = pipe.generate(opts, progress=False)
    assert len(explanations) == 2
    for explanation, image in zip(explanations, plain):
        assert explanation.image.size == (16, 24)
        assert explanation.image.info["parameters"] == image.info["parameters"]
        diff = np.abs(np.asarray(explanation.image, dtype=int) - np.asarray(image, dtype=int))
        assert diff.max() <= 1  # float rounding of the explicit softmax: at most one 8-bit level
        assert len(explanation.trajectory) == opts.steps
        # Euler a's last step lands on its x0 prediction: the last trajectory picture is the image
        np.testing.assert_array_equal(np.asarray(explanation.trajectory[-1]), np.asarray(explanation.image))


def test_maps_sum_to_one_over_tokens_and_words_are_their_pieces_summed(explained):
    _, _, explanations = explained
    for explanation in explanations:
        attention = explanation.attention  # (M, H, W)
        assert attention.shape == (77, 24, 16)
        torch.testing.assert_close(attention.sum(0), torch.ones(24, 16))
        assert [w.word for w in explanation.words] == ["a", "red", "circle", "at", "the", "top", "left", ",",
                                                       "photorealistic"]
        last = explanation.words[-1]
        assert len(last.columns) == 2  # photo + realistic
        torch.testing.assert_close(last.attention, attention[last.columns].sum(0))
        assert 0 < last.share < 1
    assert not torch.equal(explanations[0].attention, explanations[1].attention)  # each image its own rows


def test_prompt_words_follow_chunks_and_ignore_syntax_and_tags(tokenizer):
    words = prompt_words(tokenizer, "(red:1.3) circle BREAK skyscrapers")
    assert words == [("red", [1]), ("circle", [2]), ("skyscrapers", [78, 79, 80])]
    assert tokenizer.words(tokenizer.encode("top-left")) == [("top", [0]), ("-", [1]), ("left", [2])]


def test_layer_grids_round_up_as_strided_convolutions_do():
    assert _layer_grid(6 * 4, 6, 4) == (6, 4)
    assert _layer_grid(3 * 2, 6, 4) == (3, 2)
    assert _layer_grid(2 * 1, 6, 4) == (2, 1)  # 3 -> 2, 2 -> 1
    with pytest.raises(ValueError, match="not a downsampling"):
        _layer_grid(5, 6, 4)


def test_pictures(explained):
    _, _, explanations = explained
    e = explanations[0]
    coloured = heat(torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
    assert coloured.shape == (2, 2, 3) and tuple(coloured[0, 0]) == (13, 8, 135) and tuple(coloured[0, 1]) == (240, 249, 33)
    picture = word_picture(e.image, e.words[1])
    assert picture.width % 16 == 0 and picture.height > picture.width  # enlarged, with a label band
    assert strip_picture(e, size=48).size == (4 * 32, 48)  # 16x24 enlarged twice


def test_cli_writes_the_image_strip_word_maps_and_index(tmp_path, capsys):
    out = tmp_path / "seen"
    assert main(["explain", "a red circle at the top left", "--out", str(out), "--steps", "2", "--seed", "4"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["seed"] == 4 and index["steps"] == 2 and [w["word"] for w in index["words"]][:3] == ["a", "red",
                                                                                                       "circle"]
    assert "Seed: 4" in read_png_infotext(out / "image.png")
    assert Image.open(out / "trajectory.png").width == 2 * Image.open(out / "trajectory.png").height
    for word in index["words"]:
        assert Image.open(out / word["file"]).size[0] >= 128 and 0 < word["share"] < 1
    capsys.readouterr()  # the progress bar
    # bad input: one line, exit 2, nothing written over
    before = (out / "index.json").read_text()
    assert main(["explain", "a red circle", "--out", str(out)]) == 2
    assert main(["explain", "  ", "--out", str(tmp_path / "new")]) == 2
    assert main(["explain", "a", "--out", str(tmp_path / "new"), "--width", "33"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "not an empty folder" in err[0] and "prompt is empty" in err[1] and "width 33" in err[2]
    assert (out / "index.json").read_text() == before and not (tmp_path / "new").exists()

"""A1111 hypernetworks: file formats, how they hook into attention, prompt tags and the command line, on the tiny
model (attention context widths 32: text and level-0 channels, and 64: the middle block)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import nanoldm.pipelines.sampling as sampling
from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.finetune.hypernetwork import (Hypernetwork, HypernetworkOptions, apply_hypernetworks, attention_widths,
                                           default_widths, remove_hypernetworks)
from nanoldm.finetune.hypernetwork_file import load_hypernetwork, save_hypernetwork
from nanoldm.layers.attention import Attention
from nanoldm.pipelines.infotext import parse_infotext, read_png_infotext
from nanoldm.pipelines.pipeline import Pipeline

A1111_KEYS = {"step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
              "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
              "last_layer_dropout", "optional_info"}
GEN = dict(steps=2, seed=3, width=16, height=16, cfg_scale=5.0, progress=False)


@pytest.fixture
def model(tiny_model_16px):
    return tiny_model_16px


def strong(widths=(32, 64), seed=1, **options) -> Hypernetwork:
    """A hypernetwork whose effect shows in 8-bit images (A1111's "Normal" init is nearly the identity)."""
    torch.manual_seed(seed)
    options = HypernetworkOptions(weight_init="XavierNormal", **options)
    return Hypernetwork(list(widths), options, name=f"hn{seed}").eval()


def unet_out(model, context=None):
    torch.manual_seed(5)
    x, context = torch.randn(2, 4, 4, 4), torch.randn(2, 7, 32) if context is None else context
    with torch.no_grad():
        return model.unet(x, torch.tensor([10, 500]), context)


def set_hook(model, hook):
    for a in model.unet.modules():
        if isinstance(a, Attention):
            a.context_hook = hook


def hooks(model):
    return [a.context_hook for a in model.unet.modules() if isinstance(a, Attention)]


def pixels(images):
    return np.stack([np.asarray(im) for im in images])


def test_widths_of_the_model_and_a1111_default_for_sd1(model):
    from nanoldm.config import UNetConfig

    assert attention_widths(model.unet) == [32, 64]
    assert default_widths(model.unet.cfg) == [32, 64]
    assert default_widths(UNetConfig()) == [768, 320, 640, 1280]


def test_round_trip_pt_and_safetensors(tmp_path):
    options = HypernetworkOptions(layer_structure=(1, 1.5, 2, 1), activation_func="leakyrelu", add_layer_norm=True,
                                  use_dropout=True, dropout_structure=(0, 0.1, 0.2, 0), activate_output=True,
                                  weight_init="KaimingNormal")
    hn = Hypernetwork([32, 64], options, name="style", step=7, sd_checkpoint="0123456789", sd_checkpoint_name="base")
    save_hypernetwork(hn, tmp_path / "style.pt")
    save_hypernetwork(hn, tmp_path / "style.safetensors")
    raw = torch.load(tmp_path / "style.pt", map_location="cpu", weights_only=True)  # plain data only
    assert set(raw) == A1111_KEYS | {32, 64} and len(raw[32]) == 2
    assert sorted(raw[32][0]) == sorted(f"linear.{i}.{p}" for i in (0, 2, 4, 6, 8, 10) for p in ("weight", "bias")) \
        and raw["layer_structure"] == [1.0, 1.5, 2.0, 1.0] and raw["last_layer_dropout"] is True
    for path in (tmp_path / "style.pt", tmp_path / "style.safetensors"):
        back = load_hypernetwork(path)
        assert (back.name, back.step, back.widths, back.sd_checkpoint) == ("style", 7, [32, 64], "0123456789")
        assert back.options.dropout == options.dropout and back.options.activate_output and back.options.add_layer_norm
        assert all(torch.equal(a, b) for a, b in zip(hn.state_dict().values(), back.state_dict().values()))
        assert not back.training and not any(p.requires_grad for p in back.parameters())


def _a1111_mlp(width, g):
    """The state dict of one A1111 module with layer_structure [1, 2, 1], relu, layer norm, dropout [0, 0.3, 0]:
    linear.0 Linear, .1 ReLU, .2 LayerNorm, .3 Dropout, .4 Linear, .5 LayerNorm."""
    r = lambda *s: torch.randn(*s, generator=g) * 0.3  # noqa: E731
    return {"linear.0.weight": r(2 * width, width), "linear.0.bias": r(2 * width),
            "linear.2.weight": 1 + r(2 * width), "linear.2.bias": r(2 * width),
            "linear.4.weight": r(width, 2 * width), "linear.4.bias": r(width),
            "linear.5.weight": 1 + r(width), "linear.5.bias": r(width)}


def _by_hand(sd, x, strength):
    h = F.relu(F.linear(x, sd["linear.0.weight"], sd["linear.0.bias"]))
    h = F.layer_norm(h, h.shape[-1:], sd["linear.2.weight"], sd["linear.2.bias"])
    h = F.linear(h, sd["linear.4.weight"], sd["linear.4.bias"])
    h = F.layer_norm(h, h.shape[-1:], sd["linear.5.weight"], sd["linear.5.bias"])
    return x + h * strength


def test_a1111_file_built_by_hand_gives_the_hand_computed_unet_output(model, tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = {w: (_a1111_mlp(w, g), _a1111_mlp(w, g)) for w in (32, 64)}
    torch.save({**weights, "name": "hand", "step": 100, "layer_structure": [1, 2, 1], "activation_func": "relu",
                "is_layer_norm": True, "weight_initialization": "Normal", "use_dropout": True,
                "dropout_structure": [0, 0.3, 0], "activate_output": False, "last_layer_dropout": True,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, tmp_path / "hand.pt")
    hn = load_hypernetwork(tmp_path / "hand.pt")
    assert hn.name == "hand" and hn.step == 100
    plain = unet_out(model)

    set_hook(model, lambda c: tuple(_by_hand(weights[c.shape[-1]][i], c, 0.5) for i in (0, 1)))
    expected = unet_out(model)
    apply_hypernetworks(model.unet, [(hn, 0.5)])
    got = unet_out(model)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2
    remove_hypernetworks(model.unet)
    assert all(h is None for h in hooks(model)) and torch.equal(unet_out(model), plain)


def test_widths_missing_from_the_file_are_untouched_and_old_key_names_load(model, tmp_path):
    g = torch.Generator().manual_seed(0)
    old = {"linear1.weight": torch.randn(64, 32, generator=g), "linear1.bias": torch.randn(64, generator=g),
           "linear2.weight": torch.randn(32, 64, generator=g), "linear2.bias": torch.randn(32, generator=g)}
    torch.save({32: (old, old)}, tmp_path / "old.pt")  # the first A1111 format: no options at all
    hn = load_hypernetwork(tmp_path / "old.pt")
    assert hn.name == "old" and hn.widths == [32] and hn.options.layer_structure == (1, 2, 1)
    apply_hypernetworks(model.unet, [(hn, 1.0)])
    for a in model.unet.modules():
        if isinstance(a, Attention):
            assert (a.context_hook is None) == (a.to_k.in_features == 64)
    c = torch.randn(1, 3, 32)
    k, v = next(h for h in hooks(model) if h is not None)(c)
    expected = c + F.linear(F.linear(c, old["linear1.weight"], old["linear1.bias"]), old["linear2.weight"],
                            old["linear2.bias"])
    torch.testing.assert_close(k, expected) and torch.testing.assert_close(v, expected)


def test_two_hypernetworks_chain_in_order(model):
    a, b = strong(seed=1, activation_func="relu"), strong(seed=2, activation_func="tanh")

    def chained(c):
        (ak, av), (bk, bv) = a.pair(c.shape[-1]), b.pair(c.shape[-1])
        return bk(ak(c, 1.0), 0.7), bv(av(c, 1.0), 0.7)

    set_hook(model, chained)
    expected = unet_out(model)
    apply_hypernetworks(model.unet, [(a, 1.0), (b, 0.7)])
    torch.testing.assert_close(unet_out(model), expected, rtol=0, atol=1e-6)
    apply_hypernetworks(model.unet, [(b, 0.7), (a, 1.0)])
    assert (unet_out(model) - expected).abs().max() > 1e-4


def test_strength_zero_is_bit_identical_and_strength_one_changes_images(model, tmp_path):
    save_hypernetwork(strong(activation_func="relu"), tmp_path / "style.pt")
    pipe = Pipeline(model)
    plain = pixels(pipe.txt2img("a red circle", **GEN))
    pipe.load_hypernetwork(tmp_path / "style.pt", strength=0.0)
    assert np.array_equal(pixels(pipe.txt2img("a red circle", **GEN)), plain)
    pipe.hypernetworks.clear()
    pipe.load_hypernetwork(tmp_path / "style.pt")
    images = pipe.txt2img("a red circle", **GEN)
    assert np.abs(pixels(images).astype(int) - plain).max() > 10
    assert parse_infotext(images[0].info["parameters"])["Hypernet"] == "hn1"
    pipe.hypernetworks.clear()
    assert all(h is None for h in hooks(model))


def test_prompt_tag_equals_loading_at_that_strength(model, tmp_path, monkeypatch):
    folder = tmp_path / "hypernetworks"
    save_hypernetwork(strong(activation_func="relu"), folder / "sub" / "style.pt")
    encoded = []
    real = sampling.encode_prompt_pair
    monkeypatch.setattr(sampling, "encode_prompt_pair",
                        lambda enc, tok, prompt, negative, **kw: encoded.append(prompt) or real(enc, tok, prompt,
                                                                                               negative, **kw))
    tagged = Pipeline(model, hypernetwork_dir=folder).txt2img("a red circle <hypernet:style:0.5>", **GEN)
    assert encoded == ["a red circle "]
    assert tagged[0].info["parameters"].startswith("a red circle <hypernet:style:0.5>\n")
    assert all(h is None for h in hooks(model))  # the tag's hooks are gone after the generation

    pipe = Pipeline(model)
    pipe.load_hypernetwork(folder / "sub" / "style.pt", strength=0.5)
    explicit = pipe.txt2img("a red circle ", **GEN)
    assert np.array_equal(pixels(tagged), pixels(explicit))
    params = parse_infotext(explicit[0].info["parameters"])
    assert (params["Hypernet"], params["Hypernet strength"]) == ("hn1", "0.5")
    # a tag on top of an explicit hypernetwork: the explicit hooks come back afterwards
    before = hooks(model)
    pipe.txt2img("a red circle <hypernet:hn1:1>", **GEN)
    assert hooks(model) == before
    # img2img and inpaint read tags the same way
    init, mask = explicit[0], Image.new("L", (16, 16), 255)
    explicit_i2i = pixels(pipe.img2img(init, "a blue square", **GEN))
    pipe.hypernetworks.clear()
    tagged_i2i = pipe.img2img(init, "a blue square<hypernet:hn1:0.5>", **GEN)
    assert np.array_equal(pixels(tagged_i2i), explicit_i2i)
    inpainted = pipe.inpaint(init, mask, "<hypernet:hn1:0.5>a blue square", **GEN)
    assert inpainted[0].info["parameters"].startswith("<hypernet:hn1:0.5>a blue square\n")
    assert all(h is None for h in hooks(model))


def test_unknown_names_other_tags_and_bad_strengths_are_clear_errors(model, tmp_path):
    save_hypernetwork(strong(), tmp_path / "style.safetensors")
    pipe = Pipeline(model, hypernetwork_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown hypernetwork 'nope'.*known: style"):
        pipe.txt2img("a cat <hypernet:nope:1>", **GEN)
    with pytest.raises(ValueError, match="foo extra networks are not supported, only <hypernet:name:...>, <lora"):
        pipe.txt2img("a cat <foo:ink:0.5>", **GEN)
    with pytest.raises(ValueError, match="'abc' is not a number"):
        pipe.txt2img("a cat <hypernet:style:abc>", **GEN)
    with pytest.raises(ValueError, match="no hypernetwork folder"):
        Pipeline(model).txt2img("a cat <hypernet:style>", **GEN)
    assert all(h is None for h in hooks(model))


def test_wrong_width_is_refused(model, tmp_path):
    save_hypernetwork(strong(widths=(768, 320)), tmp_path / "sd1.pt")
    pipe = Pipeline(model)
    with pytest.raises(ValueError, match=r"widths \[768, 320\].*take widths \[32, 64\]"):
        pipe.load_hypernetwork(tmp_path / "sd1.pt")
    assert pipe.hypernetworks.loaded == [] and all(h is None for h in hooks(model))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return open, (str(self.marker), "w")


def test_malicious_pickle_is_refused_and_never_executed(model, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({32: ({}, {}), "name": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: its pickle asks to run code.*Unsupported global"):
        load_hypernetwork(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        Pipeline(model, hypernetwork_dir=tmp_path).txt2img("a cat <hypernet:evil:1>", **GEN)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="refused"):
        load_hypernetwork(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_hypernetwork(tmp_path / "missing.pt")


def test_cli_hypernetwork_flags(model, tmp_path):
    save_model(model, tmp_path / "model.safetensors")
    save_hypernetwork(strong(seed=1), tmp_path / "a.pt")
    save_hypernetwork(strong(seed=2), tmp_path / "lib" / "b.safetensors")
    out = tmp_path / "out"
    assert main(["txt2img", "a cat <hypernet:b:0.8>", "--model", str(tmp_path / "model.safetensors"), "--steps", "1",
                 "--seed", "0", "--device", "cpu", "--hypernetwork", str(tmp_path / "a.pt"),
                 "--hypernetwork-strength", "0.5", "--hypernetwork-dir", str(tmp_path / "lib"), "--out", str(out)]) == 0
    params = parse_infotext(read_png_infotext(next(out.glob("*.png"))))
    assert params["Prompt"] == "a cat <hypernet:b:0.8>" and params["Hypernet"] == "hn1"
    assert params["Hypernet strength"] == "0.5"
    assert main(["txt2img", "a cat", "--model", str(tmp_path / "model.safetensors"), "--steps", "1", "--device",
                 "cpu", "--hypernetwork", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2

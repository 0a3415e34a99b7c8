"""Infotext in, image out: images made with ten varied settings, then made again from their PNGs alone with
``nanoldm txt2img --from-png`` (through the CLI's main function), are the same pixels and the same infotext; and
the bad inputs each end in one clear line."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.model import LatentDiffusion
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY

PROMPT = "a red circle, (masterpiece:1.2)"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(LatentDiffusion.from_config(dataclasses.replace(TINY, image_size=16),
                                           tokenizer=CLIPTokenizer.default()), path)
    return str(path)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings")
    save_file({"emb_params": torch.randn(2, TINY.text.width, generator=torch.Generator().manual_seed(1))},
              folder / "shiny.safetensors")  # A1111's layout: the token is the file's stem
    return str(folder)


SETTINGS = {
    "Euler a, batch 2": ["--batch-size", "2", "--negative-prompt", "blue, lowres: bad"],
    "Euler, clip skip 2": ["--sampler", "Euler", "--clip-skip", "2"],
    "Heun": ["--sampler", "Heun", "--cfg-scale", "4.5"],
    "DDIM, eta, ENSD": ["--sampler", "DDIM", "--eta", "0.5", "--ensd", "31337"],
    "DPM++ 2M Karras schedule": ["--sampler", "DPM++ 2M Karras", "--width", "20", "--height", "12"],
    "variation seed, batch 2": ["--subseed", "3", "--subseed-strength", "0.4", "--batch-size", "2"],
    "variation seed resized": ["--subseed", "8", "--subseed-strength", "0.9", "--seed-resize-from-w", "12",
                               "--seed-resize-from-h", "20"],
    "hires latent": ["--hires", "--denoising-strength", "0.6", "--ensd", "5"],
    "hires Lanczos resize, own sampler and prompt": [
        "--hires", "--hires-upscaler", "Lanczos", "--hires-resize-x", "24", "--hires-sampler", "Euler",
        "--hires-steps", "1", "--hires-prompt", "a blue square, masterpiece"],
    "hires with its own schedule type": ["--hires", "--sampler", "DPM++ 2M", "--hires-scheduler", "Exponential"],
    "discard penultimate sigma": ["--sampler", "Euler", "--discard-penultimate-sigma"],
    "embedding": ["--embeddings", "EMBEDDINGS", "--sampler", "Euler"],
}


def _pixels(path) -> bytes:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).tobytes() + repr(im.size).encode()


def _text(path) -> str:
    with Image.open(path) as im:
        im.load()
        return im.text["parameters"]


@pytest.mark.parametrize("case", SETTINGS)
def test_an_image_comes_back_from_its_png(case, model_file, embeddings, tmp_path):
    flags = [embeddings if f == "EMBEDDINGS" else f for f in SETTINGS[case]]
    prompt = PROMPT + (", shiny" if case == "embedding" else "")
    common = ["--model", model_file, "--steps", "2", "--seed", "11"]
    assert main(["txt2img", prompt, *common, *flags, "--out", str(tmp_path / "first")]) == 0
    extra = ["--embeddings", embeddings] if case == "embedding" else []
    made = sorted((tmp_path / "first").glob("*.png"))
    assert len(made) == (2 if "batch 2" in case else 1)
    for i, png in enumerate(made):
        out = tmp_path / f"again{i}"
        assert main(["txt2img", "--from-png", str(png), "--model", model_file, *extra, "--out", str(out)]) == 0
        (again,) = out.glob("*.png")
        assert _pixels(again) == _pixels(png)
        assert _text(again) == _text(png)


def test_given_flags_override_the_infotext(model_file, tmp_path):
    text = "a red circle\nSteps: 3, Sampler: Euler, CFG scale: 6, Seed: 4, Size: 16x16"
    assert main(["txt2img", "a blue square", "--infotext", text, "--steps", "2", "--seed", "4", "--model",
                 model_file, "--out", str(tmp_path)]) == 0
    (png,) = tmp_path.glob("*.png")
    assert _text(png) == "a blue square\nSteps: 2, Sampler: Euler, Schedule type: Automatic, CFG scale: 6, Seed: 4, " \
                         "Size: 16x16, Model hash: " + _text(png).split("Model hash: ")[1]


def _fails(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_a_png_without_parameters_is_one_line(model_file, tmp_path, capsys):
    Image.new("RGB", (16, 16)).save(tmp_path / "plain.png")
    err = _fails(["txt2img", "--from-png", str(tmp_path / "plain.png"), "--model", model_file], capsys)
    assert err == (f"nanoldm txt2img: error: {tmp_path / 'plain.png'} has no A1111 'parameters' text to read "
                   f"settings from (ComfyUI's own workflow metadata is not read)")


def test_unknown_keys_and_another_models_hash_are_warned_not_fatal(model_file, tmp_path, capsys):
    text = ("a red circle\nNegative prompt: blue\nSteps: 2, Sampler: Euler, Seed: 3, Size: 16x16, "
            "Model hash: 0123456789, Frobnicate: 7, Lora hashes: \"x: 1\", Face style: \"a, b\"")
    assert main(["txt2img", "--infotext", text, "--model", model_file, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: the infotext's model hash 0123456789 is not the loaded model's " in err
    assert "warning: infotext keys nanoldm does not use (kept, ignored): Frobnicate: 7, Face style: a, b" in err
    assert len(list(tmp_path.glob("*.png"))) == 1


@pytest.mark.parametrize("flags, message", [
    (["a red circle", "--subseed-strength", "1.5"], "subseed strength (variation strength) must be in [0, 1], got 1.5"),
    (["a red circle", "--hires", "--hires-scale", "1.1"],
     "16x16 scaled by 1.1 is 17x17, not a multiple of the model's latent factor 2: choose a hires scale or "
     "resize that gives multiples of 2"),
    (["--infotext", "a\nSteps: 2, Sampler: Euler, Seed: 3, Hires upscale: 1.1"], "16x16 scaled by 1.1 is 17x17"),
    (["--infotext", "a\nSteps: many, Sampler: Euler, Seed: 3"], "infotext: Steps 'many' is not a valid int"),
    (["a red circle", "--hires", "--hires-upscaler", "4x-UltraSharp"], "unknown hires upscaler '4x-UltraSharp'"),
    ([], "a prompt is required (or --from-png FILE / --infotext TEXT to take the infotext's)"),
])
def test_bad_settings_are_one_line(flags, message, model_file, capsys):
    assert message in _fails(["txt2img", *flags, "--model", model_file], capsys)

"""Every bad generation setting: a clear error naming it, before any work is done."""
import pytest
import torch
from PIL import Image

from nanoldm.cli.__main__ import main
from nanoldm.config import ModelConfig, UNetConfig
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY, TINY_UNET, TINY_VAE, TINY_TEXT


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return Pipeline(LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()))


@pytest.mark.parametrize("options,message", [
    ({"sampler": "Euler b"}, "unknown sampler"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"width": 33}, "width 33 is not a positive multiple of the latent factor 2"),
    ({"height": 0}, "height 0 is not a positive multiple"),
    ({"batch_size": 0}, "batch size"),
    ({"seed": -5}, "seed must be in"),
    ({"cfg_scale": float("nan")}, "cfg scale must be a finite number, got nan"),
    ({"cfg_scale": float("inf")}, "cfg scale must be a finite number, got inf"),
    ({"eta": float("nan")}, "eta must be a finite number"),
])
def test_txt2img_settings(pipe, options, message):
    with pytest.raises(ValueError, match=message):
        pipe.txt2img("a", progress=False, **options)


def test_unknown_sampler_lists_the_valid_names(pipe):
    with pytest.raises(ValueError) as e:
        pipe.txt2img("a", sampler="Euler b", progress=False)
    for name in ("DDIM", "Euler a", "DPM++ 2M Karras"):
        assert name in str(e.value)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_unit_interval(pipe, strength):
    with pytest.raises(ValueError, match="strength must be in"):
        pipe.img2img(Image.new("RGB", (16, 16)), "a", strength=strength, progress=False)


def test_mask_of_another_size(pipe):
    with pytest.raises(ValueError, match="the mask is 8x8 but the image is 16x16"):
        pipe.inpaint(Image.new("RGB", (16, 16)), Image.new("L", (8, 8)), "a", progress=False)


def test_inpaint_on_a_model_that_cannot_inpaint():
    unet = UNetConfig(**{**TINY_UNET.__dict__, "in_channels": 6})
    odd = Pipeline(LatentDiffusion.from_config(ModelConfig(unet=unet, vae=TINY_VAE, text=TINY_TEXT, image_size=32),
                                               tokenizer=CLIPTokenizer.default()))
    with pytest.raises(ValueError, match="this model cannot inpaint: its UNet takes 6 input channels"):
        odd.inpaint(Image.new("RGB", (16, 16)), Image.new("L", (16, 16)), "a", progress=False)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from nanoldm.checkpoint.save import save_model
    torch.manual_seed(0)
    save_model(LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()), tmp_path / "m.safetensors")
    code = main(["txt2img", "a", "--model", str(tmp_path / "m.safetensors"), "--steps", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "steps must be at least 1" in err[0]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code = main(["img2img", str(tmp_path / "broken.png"), "a", "--model", str(tmp_path / "m.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "broken.png" in err[0] and "unreadable or corrupt image" in err[0]


def test_an_empty_inpainting_mask_is_a_warning(pipe):
    with pytest.warns(UserWarning, match="the mask is empty"):
        pipe.inpaint(Image.new("RGB", (16, 16)), Image.new("L", (16, 16)), "a", steps=1, progress=False)


def test_cli_warnings_are_one_line(tmp_path, capsys):
    from nanoldm.checkpoint.save import save_model
    torch.manual_seed(0)
    save_model(LatentDiffusion.from_config(TINY, tokenizer=CLIPTokenizer.default()), tmp_path / "m.safetensors")
    Image.new("RGB", (16, 16)).save(tmp_path / "i.png")
    Image.new("L", (16, 16)).save(tmp_path / "mask.png")
    code = main(["inpaint", str(tmp_path / "i.png"), str(tmp_path / "mask.png"), "a", "--steps", "1",
                 "--model", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert code == 0 and err == ["nanoldm inpaint: warning: the mask is empty (all black): nothing will be repainted "
                                 "and the image comes back as it was (white marks what to repaint)"]


def test_sizes_far_over_the_native_size(pipe):
    native = pipe.model.config.image_size
    with pytest.raises(ValueError, match=f"over 4x this model's native size {native}x{native}.*--force-size"):
        pipe.txt2img("a", width=4 * native + 2, steps=1, progress=False)
    with pytest.warns(UserWarning, match=f"over twice this model's native size {native}x{native}"):
        pipe.txt2img("a", width=2 * native + 2, steps=1, progress=False)
    with pytest.warns(UserWarning, match="over twice"):
        pipe.txt2img("a", width=4 * native + 2, steps=1, force_size=True, progress=False)


def test_img2img_uses_the_native_size_and_fits_the_input(pipe):
    native = pipe.model.config.image_size
    odd = Image.new("RGB", (50, 30), "red")  # not a multiple of the latent factor: fitted, not refused
    for mode in ("just resize", "crop and resize", "resize and fill"):
        out = pipe.img2img(odd, "a", steps=1, resize_mode=mode, progress=False)
        assert out[0].size == (native, native)
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        pipe.img2img(odd, "a", steps=1, resize_mode="stretch", progress=False)

"""A1111 infotext: format/parse round trips, real A1111 strings, the PNG chunk, and the model hash."""
import hashlib

from PIL import Image

from nanoldm.pipelines.infotext import (
    format_infotext,
    generation_params,
    model_hash,
    parse_infotext,
    read_png_infotext,
    save_png,
)

PARAMS = {"Steps": 20, "Sampler": "Euler a", "CFG scale": 7, "Seed": 42, "Size": "32x32",
          "Model hash": "abcdef1234", "Model": "shapes"}
LINE = "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 32x32, Model hash: abcdef1234, Model: shapes"


def test_format_layout():
    text = format_infotext("a red circle", "blurry, lowres", PARAMS)
    assert text == f"a red circle\nNegative prompt: blurry, lowres\n{LINE}"
    assert format_infotext("a red circle", "", PARAMS) == f"a red circle\n{LINE}"


def test_format_quotes_commas_colons_and_newlines_and_skips_none():
    text = format_infotext("p", "", {"Steps": 20, "Lora hashes": "a: 1, b: 2", "Note": "x\ny", "Skipped": None,
                                     "Tiling": "Tiling"})
    assert text == 'p\nSteps: 20, Lora hashes: "a: 1, b: 2", Note: "x\\ny", Tiling'


def test_round_trip():
    prompt, negative = "a (red:1.2) circle,\nat the top left", "blurry\nlowres"
    params = {**PARAMS, "Lora hashes": "ink: 0123456789, pen: 9876543210", "Schedule type": "Karras"}
    parsed = parse_infotext(format_infotext(prompt, negative, params))
    assert parsed["Prompt"] == prompt and parsed["Negative prompt"] == negative
    assert {k: parsed[k] for k in params} == {k: str(v) for k, v in params.items()}
    assert (parsed["Size-1"], parsed["Size-2"]) == ("32", "32")


def test_generation_params_in_a1111_order():
    params = generation_params(steps=20, sampler="Euler a", cfg_scale=7.0, seed=42, width=64, height=32,
                               model_hash="abcdef1234", model="shapes", extra={"Hypernet": "anime"})
    assert format_infotext("p", "", params) == (
        "p\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x32, Model hash: abcdef1234, "
        "Model: shapes, Hypernet: anime")
    line = format_infotext("", "", generation_params(steps=5, sampler="DDIM", cfg_scale=7.5, seed=1, width=8,
                                                     height=8, denoising_strength=0.75, clip_skip=2))
    assert line == "Steps: 5, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 8x8, Denoising strength: 0.75, Clip skip: 2"


def test_parse_a1111_docstring_example():
    text = ("girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, "
            "by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
            "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, "
            "poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b")
    parsed = parse_infotext(text)
    assert parsed["Prompt"].startswith("girl with an artist's beret,") and parsed["Prompt"].endswith("intricate")
    assert parsed["Negative prompt"].startswith("ugly, fat,") and parsed["Negative prompt"].endswith("drawing")
    assert parsed["Steps"] == "20" and parsed["Sampler"] == "Euler a" and parsed["CFG scale"] == "7"
    assert parsed["Seed"] == "965400086" and parsed["Model hash"] == "45dee52b"
    assert (parsed["Size"], parsed["Size-1"], parsed["Size-2"]) == ("512x512", "512", "512")


def test_parse_modern_a1111_infotext():
    text = ('masterpiece, 1girl, <lora:add_detail:0.5>\nstanding in a field\n'
            'Negative prompt: (worst quality:1.4), lowres\n'
            'Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234567890, '
            'Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, '
            'Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, '
            'Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03, bad: 1234", '
            'Version: v1.10.1')
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "masterpiece, 1girl, <lora:add_detail:0.5>\nstanding in a field"
    assert parsed["Negative prompt"] == "(worst quality:1.4), lowres"
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Schedule type"] == "Karras"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "768") and parsed["Clip skip"] == "2"
    assert parsed["Model hash"] == "6ce0161689" and parsed["Model"] == "v1-5-pruned-emaonly"
    assert parsed["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert parsed["TI hashes"] == "easynegative: c74b4e810b03, bad: 1234"
    assert parsed["Version"] == "v1.10.1"


def test_parse_without_parameters_line():
    parsed = parse_infotext("just a prompt\nover two lines")
    assert parsed == {"Prompt": "just a prompt\nover two lines", "Negative prompt": ""}
    assert parse_infotext("Negative prompt: only this\nSteps: 1, Seed: 2, Sampler: DDIM")["Prompt"] == ""


def test_png_chunk_round_trip(tmp_path):
    text = format_infotext("a red circle, naïve ünïcode", "blurry", PARAMS)
    path = tmp_path / "image.png"
    save_png(Image.new("RGB", (8, 8), "red"), path, text)
    assert read_png_infotext(path) == text
    with Image.open(path) as image:
        assert image.text["parameters"] == text
    save_png(Image.new("RGB", (8, 8)), tmp_path / "bare.png", None)
    assert read_png_infotext(tmp_path / "bare.png") is None


def test_png_non_latin1_text(tmp_path):
    text = format_infotext("猫, 🐱", "", PARAMS)
    save_png(Image.new("RGB", (4, 4)), tmp_path / "cjk.png", text)
    assert read_png_infotext(tmp_path / "cjk.png") == text


def test_model_hash_is_sha256_prefix(tmp_path):
    data = bytes(range(256)) * 5000  # > one read block when read with a small block size
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()[:10]
    assert model_hash(path) == expected
    assert model_hash(path, block_size=4096) == expected
    assert len(expected) == 10

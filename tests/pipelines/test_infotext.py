"""A1111 infotext: format/parse round trips, real A1111 strings, the PNG chunk, and the model hash."""
import hashlib

from PIL import Image

from nanoldm.checkpoint.hashing import sha256_file
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
    assert sha256_file(path, block_size=4096)[:10] == expected and sha256_file(path, start=7) == \
        hashlib.sha256(data[7:]).hexdigest()
    assert len(expected) == 10


# --- reading back into GenerateOptions (pipelines/from_infotext.py) ---------------------------------------------

import pytest  # noqa: E402

from nanoldm.options import GenerateOptions  # noqa: E402
from nanoldm.pipelines.from_infotext import infotext_of, read_infotext  # noqa: E402
from nanoldm.pipelines.infotext import hires_params, seed_params  # noqa: E402

# the shape of an A1111 1.10 txt2img infotext with every extra this branch reads (values invented)
A1111_110 = (
    "masterpiece, a castle on a hill, (golden hour:1.2)\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse.safetensors, "
    "Variation seed: 987654321, Variation seed strength: 0.15, Seed resize from: 512x512, "
    "Denoising strength: 0.45, Clip skip: 2, ENSD: 31337, RNG: CPU, "
    "Hires sampler: Euler a, Hires prompt: \"a castle, detailed\", Hires upscale: 1.5, Hires steps: 12, "
    "Hires upscaler: Latent (bicubic antialiased), TI hashes: \"easynegative: c74b4e810b03\", "
    "Lora hashes: \"detail: 0123abcd\", Version: v1.10.1"
)


def test_an_a1111_infotext_becomes_generate_options():
    settings = read_infotext(A1111_110)
    o = settings.options
    assert (o.prompt, o.negative_prompt) == ("masterpiece, a castle on a hill, (golden hour:1.2)",
                                             "lowres, bad anatomy")
    assert (o.steps, o.sampler, o.cfg_scale, o.seed, o.width, o.height) == (28, "DPM++ 2M", 6.5, 1234567890, 512, 768)
    assert (o.subseed, o.subseed_strength, o.seed_resize_from_w, o.seed_resize_from_h) == (987654321, 0.15, 512, 512)
    assert (o.strength, o.clip_skip, o.ensd) == (0.45, 2, 31337)
    assert (o.enable_hr, o.hr_scale, o.hr_second_pass_steps, o.hr_upscaler) == (True, 1.5, 12,
                                                                                "Latent (bicubic antialiased)")
    assert (o.hr_sampler_name, o.hr_prompt, o.hr_resize_x) == ("Euler a", "a castle, detailed", 0)
    assert settings.model_hash == "6ce0161689"
    # "Schedule type" maps onto GenerateOptions.scheduler once it has one; until then it is kept and reported
    assert {k: v for k, v in settings.unknown.items() if k != "Schedule type"} == {}


def test_missing_keys_take_a1111s_defaults():
    o = read_infotext("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x32").options
    defaults = GenerateOptions()
    assert (o.clip_skip, o.enable_hr, o.subseed_strength, o.ensd) == (1, False, 0.0, 0)
    assert (o.negative_prompt, o.strength, o.batch_size) == ("", defaults.strength, 1)
    resized = read_infotext("a\nSteps: 2, Sampler: Euler, Seed: 1, Hires resize: 640x0").options
    assert (resized.enable_hr, resized.hr_resize_x, resized.hr_resize_y) == (True, 640, 0)


def test_unknown_keys_are_kept_and_warned():
    settings = read_infotext('a\nSteps: 2, Sampler: Euler, Seed: 1, ADetailer model: face_yolov8n.pt, '
                             'Foo: "x, y", Tile: 64x64, Model hash: aaaaaaaaaa, RNG: GPU')
    assert settings.unknown == {"ADetailer model": "face_yolov8n.pt", "Foo": "x, y", "Tile": "64x64"}
    lines = settings.warnings("bbbbbbbbbb")
    assert lines == [
        "the infotext's model hash aaaaaaaaaa is not the loaded model's bbbbbbbbbb: the image will differ",
        "the infotext's noise came from RNG GPU; nanoldm draws A1111's CPU noise",
        "infotext keys nanoldm does not use (kept, ignored): ADetailer model: face_yolov8n.pt, Foo: x, y, "
        "Tile: 64x64"]
    assert read_infotext("a\nSteps: 2, Sampler: Euler, Seed: 1, Model hash: AAAAAAAAAA").warnings("aaaaaaaaaa") == []


def test_our_own_infotext_reads_back_to_the_options_that_wrote_it():
    opts = GenerateOptions(prompt="a (red:1.1) circle\nsecond line", negative_prompt="blue: dark", sampler="Euler",
                           steps=7, cfg_scale=5.5, seed=3, width=48, height=32, clip_skip=2, subseed=9,
                           subseed_strength=0.5, seed_resize_from_w=40, seed_resize_from_h=24, ensd=0,
                           enable_hr=True, hr_resize_x=96, hr_upscaler="Lanczos", hr_second_pass_steps=4,
                           hr_negative_prompt="green", strength=0.3)
    params = generation_params(steps=7, sampler="Euler", cfg_scale=5.5, seed=3, width=48, height=32, clip_skip=2,
                               denoising_strength=0.3, seed_extras=seed_params(opts, 9), extra=hires_params(opts))
    settings = read_infotext(format_infotext(opts.prompt, opts.negative_prompt, params))
    assert settings.options == opts and settings.unknown == {}


def test_a_png_without_parameters_says_so(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "comfy.png")
    with pytest.raises(ValueError, match=r"comfy.png has no A1111 'parameters' text"):
        infotext_of(tmp_path / "comfy.png")
    save_png(Image.new("RGB", (8, 8)), tmp_path / "ok.png", "a\nSteps: 2, Sampler: Euler, Seed: 1")
    assert infotext_of(str(tmp_path / "ok.png")) == "a\nSteps: 2, Sampler: Euler, Seed: 1"
    assert infotext_of("a\nSteps: 2") == "a\nSteps: 2"

"""The real A1111 client from PyPI (``webuiapi``), unmodified, against the running server."""
from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
import webuiapi
from PIL import Image

from nanoldm.cli.__main__ import main as cli_main
from nanoldm.pipelines.infotext import read_png_infotext

SETTINGS = dict(prompt="a large red circle at the top left", negative_prompt="", seed=11, steps=3, width=32,
                height=32, cfg_scale=7.0, sampler_name="Euler a")


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=3)


def test_txt2img_gives_the_command_lines_pixels_and_infotext(api, tmp_path):
    result = api.txt2img(**SETTINGS)
    assert len(result.images) == 1 and result.info["all_seeds"] == [11] and result.info["seed"] == 11
    assert result.info["sampler_name"] == "Euler a" and result.parameters["prompt"] == SETTINGS["prompt"]

    assert cli_main(["txt2img", SETTINGS["prompt"], "--seed", "11", "--steps", "3", "--width", "32", "--height", "32",
                     "--cfg-scale", "7", "--sampler", "Euler a", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("*.png")
    with Image.open(path) as cli_image:
        assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(cli_image.convert("RGB")))
    assert result.image.info["parameters"] == read_png_infotext(path) == result.info["infotexts"][0]


def test_batch_and_iterations_number_their_seeds(api):
    result = api.txt2img(**{**SETTINGS, "steps": 1}, batch_size=2, n_iter=2)
    assert len(result.images) == 4 and result.info["all_seeds"] == [11, 12, 13, 14]
    assert [f"Seed: {s}," in text for s, text in zip((11, 12, 13, 14), result.info["infotexts"])] == [True] * 4


def test_img2img_with_and_without_a_mask(api):
    source = api.txt2img(**SETTINGS).image
    plain = api.img2img(images=[source], denoising_strength=0.5, **SETTINGS)
    assert plain.image.size == (32, 32) and "Denoising strength: 0.5" in plain.info["infotexts"][0]

    mask = Image.new("L", (16, 16), 0)  # another size than the image: resized, as A1111 does
    mask.paste(255, (0, 0, 8, 8))  # repaint the top-left quarter only
    masked = api.img2img(images=[source], mask_image=mask, mask_blur=0, denoising_strength=1.0, **SETTINGS)
    out, before = np.asarray(masked.image.convert("RGB")), np.asarray(source.convert("RGB"))
    assert masked.info["is_using_inpainting_conditioning"] is True
    assert np.array_equal(out[16:, :], before[16:, :]) and np.array_equal(out[:, 16:], before[:, 16:])
    assert not np.array_equal(out[:16, :16], before[:16, :16])


def test_png_info_reads_back_the_infotext(api):
    image = api.txt2img(**SETTINGS).image
    info = api.png_info(image)
    assert info.info == image.info["parameters"]
    assert info.parameters["Seed"] == "11" and info.parameters["Prompt"] == SETTINGS["prompt"]


def test_models_samplers_and_switching(api):
    titles = api.util_get_model_names()
    [builtin] = [t for t in titles if t.startswith("shapes.safetensors [")]
    assert api.util_get_current_model() == builtin and "other/copy.safetensors" in titles
    first = api.txt2img(**{**SETTINGS, "steps": 1})

    api.util_set_model("other/copy.safetensors")  # the same weights under another name
    current = api.util_get_current_model()
    assert current.startswith("other/copy.safetensors [") and current.endswith("]")  # hashed once loaded
    copy = api.txt2img(**{**SETTINGS, "steps": 1})
    assert np.array_equal(np.asarray(copy.image), np.asarray(first.image))
    assert "Model: copy" in copy.info["infotexts"][0] and copy.info["sd_model_name"] == "other/copy"

    back = api.txt2img(**{**SETTINGS, "steps": 1}, override_settings={"sd_model_checkpoint": builtin})
    assert "Model: shapes" in back.info["infotexts"][0] and api.util_get_current_model() == builtin
    names = api.util_get_sampler_names()
    assert {"Euler a", "DDIM", "DPM++ 2M", "DPM++ 2M SDE", "LMS", "Restart", "LCM"} <= set(names)
    assert {"automatic", "karras", "exponential", "sgm_uniform", "align_your_steps", "beta"} <= set(
        api.util_get_scheduler_names())


def test_schedule_types_variation_seeds_and_hires_as_the_command_line(api, tmp_path):
    """A1111 1.9+'s separate schedule type, a variation seed and Hires. fix, through the API and the CLI."""
    result = api.txt2img(**{**SETTINGS, "sampler_name": "DPM++ 2M"}, scheduler="karras", subseed=5,
                         subseed_strength=0.3, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent",
                         hr_second_pass_steps=2, denoising_strength=0.6)
    text = result.info["infotexts"][0]
    for part in ("Sampler: DPM++ 2M", "Schedule type: Karras", "Variation seed: 5", "Hires upscale: 1.5"):
        assert part in text, text
    assert result.image.size == (48, 48)
    assert cli_main(["txt2img", SETTINGS["prompt"], "--seed", "11", "--steps", "3", "--width", "32", "--height", "32",
                     "--cfg-scale", "7", "--sampler", "DPM++ 2M Karras", "--subseed", "5", "--subseed-strength", "0.3",
                     "--hires", "--hires-scale", "1.5", "--hires-upscaler", "Latent", "--hires-steps", "2",
                     "--denoising-strength", "0.6", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("*.png")
    with Image.open(path) as cli_image:
        assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(cli_image.convert("RGB")))


def test_loras_are_listed_and_applied_by_prompt_tag(api, server):
    [item] = server.get("loras").json()
    assert item["name"] == "ink" and item["path"] == "ink.safetensors"
    assert item["metadata"]["ss_network_dim"] == "4"
    plain = api.txt2img(**SETTINGS)
    inked = api.txt2img(**{**SETTINGS, "prompt": SETTINGS["prompt"] + " <lora:ink:1>"})
    assert not np.array_equal(np.asarray(plain.image), np.asarray(inked.image))
    assert 'Lora hashes: "ink: ' in inked.info["infotexts"][0]
    missing = api.txt2img(**{**SETTINGS, "prompt": SETTINGS["prompt"] + " <lora:nothing:1>"})
    assert np.array_equal(np.asarray(plain.image), np.asarray(missing.image))  # A1111 warns and goes on


def test_progress_during_a_job_skip_and_interrupt(api):
    """Two batches of 150 steps: skip ends the first after a few steps, interrupt the second; both come back."""
    done: dict = {}
    job = threading.Thread(target=lambda: done.setdefault("result", api.txt2img(**{**SETTINGS, "steps": 150},
                                                                                 n_iter=2)))
    job.start()

    def watch(until) -> list[dict]:
        seen = []
        while job.is_alive() and not (seen and until(seen[-1])):
            progress = api.get_progress()
            if progress["state"]["job_count"]:
                seen.append(progress)
            time.sleep(0.05)
        return seen

    first = watch(lambda p: p["state"]["sampling_step"] >= 2 and p["current_image"] is not None)
    api.skip()
    second = watch(lambda p: p["state"]["job_no"] == 1 and p["state"]["sampling_step"] >= 1)
    api.interrupt()
    job.join(timeout=600)
    assert first[-1]["state"]["sampling_steps"] == 150 and first[-1]["state"]["job_count"] == 2
    assert 0 < first[-1]["progress"] < 0.5 < second[-1]["progress"] < 1 and second[-1]["state"]["job_no"] == 1
    preview = Image.open(io.BytesIO(base64.b64decode(first[-1]["current_image"])))
    assert preview.size == (32, 32)
    assert done["result"].info["all_seeds"] == [11, 12]  # each batch cut short returns what it has
    after = api.get_progress()["state"]
    assert after["job_count"] == 0 and after["interrupted"] is True  # idle again; A1111 keeps the flag until the next job


def test_the_discard_penultimate_sigma_setting_as_a1111s(api, server):
    """A1111's "always_discard_next_to_last_sigma", per request (override_settings) and as an option."""
    plain = api.txt2img(**{**SETTINGS, "sampler_name": "Euler"})
    once = api.txt2img(**{**SETTINGS, "sampler_name": "Euler"},
                       override_settings={"always_discard_next_to_last_sigma": True})
    assert "Discard penultimate sigma: True" in once.info["infotexts"][0]
    assert "Discard penultimate sigma" not in plain.info["infotexts"][0]
    assert not np.array_equal(np.asarray(plain.image), np.asarray(once.image))
    assert server.post("options", json={"always_discard_next_to_last_sigma": True}).status_code == 200
    try:
        assert server.get("options").json()["always_discard_next_to_last_sigma"] is True
        always = api.txt2img(**{**SETTINGS, "sampler_name": "Euler"})
        assert np.array_equal(np.asarray(always.image), np.asarray(once.image))
    finally:
        server.post("options", json={"always_discard_next_to_last_sigma": False})

"""Every limit of the API is a 422 with one line naming the problem (never a 500, never a hang), and the server
keeps serving after each."""
from __future__ import annotations

import base64
import io

import pytest
import requests
from PIL import Image

from tests.server.conftest import SMALL


def png_b64(size=(32, 32)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("change, words", [
    ({"width": 30}, "width 30 is not a positive multiple"),
    ({"height": 160}, "above this server's limit of 128"),
    ({"steps": 151}, "steps"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 17}, "batch_size"),
    ({"n_iter": 0}, "n_iter"),
    ({"prompt": "x" * 10_001}, "prompt"),
    ({"sampler_name": "Euler z"}, "unknown sampler 'Euler z'; valid names: 'DPM++ 2M'"),
    ({"scheduler": "cosine"}, "unknown schedule type 'cosine'; valid names: "),
    ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, "unknown model '../../etc/passwd'"),
    ({"override_settings": {"CLIP_stop_at_last_layers": 0}}, "CLIP_stop_at_last_layers"),
    ({"override_settings": {"always_discard_next_to_last_sigma": "yes"}}, "always_discard_next_to_last_sigma"),
    ({"seed": 2**40}, "seed"),
])
def test_txt2img_limits(server, change, words):
    response = server.post("txt2img", {**SMALL, **change})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and words in detail


@pytest.mark.parametrize("text", ['{"cfg_scale": NaN}', '{"cfg_scale": Infinity}', '{"eta": -Infinity}',
                                  '{"steps": "many"}', "[1, 2]", "not json"])
def test_numbers_must_be_finite_and_bodies_json(server, text):
    response = server.post("txt2img", data=text, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("route, body, words", [
    ("img2img", {**SMALL, "init_images": ["bm90IGFuIGltYWdl"]}, "base64 that is not an image"),
    ("img2img", {**SMALL, "init_images": ["%%%"]}, "not valid base64"),
    ("img2img", {**SMALL, "init_images": []}, "init_images"),
    ("img2img", {**SMALL, "init_images": ["data:image/png;base64," + png_b64()], "mask": "AAAA"}, "mask"),
    ("img2img", {**SMALL, "init_images": [png_b64()], "denoising_strength": 1.5}, "denoising_strength"),
    ("png-info", {"image": "bm90IGFuIGltYWdl"}, "not an image"),
    ("png-info", {"image": "/etc/passwd"}, "image"),
    ("options", {"sd_model_checkpoint": "/etc/passwd"}, "unknown model"),
    ("options", {"eta_ddim": -1}, "eta_ddim"),
    ("options", {"always_discard_next_to_last_sigma": 1}, "always_discard_next_to_last_sigma must be true or false"),
])
def test_other_bad_inputs(server, route, body, words):
    response = server.post(route, body)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_a_body_over_50_mb_is_refused_unread(server):
    response = server.post("png-info", data=b"x" * (50 * 1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert response.status_code == 422 and "larger than 50 MB" in response.json()["detail"]


def test_unknown_fields_are_ignored_and_still_generate(server):
    response = server.post("txt2img", {**SMALL, "steps": 1, "enable_hr": True, "restore_faces": True,
                                       "a_field_a1111_never_had": {"x": [1]}, "alwayson_scripts": {"ControlNet": {}}})
    assert response.status_code == 200, response.text
    assert len(response.json()["images"]) == 1 and server.alive()


def test_send_images_false_returns_only_the_info(server):
    body = server.post("txt2img", {**SMALL, "steps": 1, "send_images": False}).json()
    assert body["images"] == [] and '"all_seeds": [7]' in body["info"]


def test_listings(server):
    assert server.get("embeddings").json() == {"loaded": {}, "skipped": {}}
    assert server.get("hypernetworks").json() == []
    memory = server.get("memory").json()
    assert memory["ram"]["used"] > 0 and memory["ram"]["total"] > memory["ram"]["used"]
    flags = server.get("cmd-flags").json()
    assert flags["api_auth"] is None and flags["max_size"] == 128 and flags["listen"] is False
    assert server.post("refresh-checkpoints").status_code == 200
    assert "openapi" in requests.get(server.root + "/docs", timeout=30).text

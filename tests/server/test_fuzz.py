"""Property-based requests (Hypothesis) over the request models: whatever a client sends, the answer is never a
500. Values are drawn around the limits and from arbitrary JSON; the ones that pass stay small (a generation of
at most 2 steps at 32x32) so every example is quick."""
from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.server.conftest import Server

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


def png_b64(size) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def around(*good):
    """Small good values, the edges of the limits, and anything else JSON can hold."""
    return st.sampled_from(good) | st.sampled_from([-1, 0, 151, 17, 2**64, 1.5, "7", None, True]) | JSON


GENERATION = {
    "prompt": st.text(max_size=40) | st.sampled_from(["<hypernet:x:1>", "(a:1e309)", "[a|b]", "a" * 10_001]) | JSON,
    "negative_prompt": st.text(max_size=20) | JSON,
    "steps": around(1, 2), "width": around(32, 8), "height": around(32, 16), "batch_size": around(1, 2),
    "n_iter": around(1), "cfg_scale": around(7.0, 0.0, -3.0), "seed": around(0, 42, -1),
    "sampler_name": st.sampled_from(["Euler a", "DDIM", "dpmpp_2m_karras", "Heun", "nope", ""]) | JSON,
    "scheduler": st.sampled_from(["automatic", "karras", "Karras", "sgm"]) | JSON,
    "eta": around(0.0, 1.0), "override_settings": st.fixed_dictionaries(
        {}, optional={"CLIP_stop_at_last_layers": around(1, 2), "sd_model_checkpoint": JSON}) | JSON,
    "styles": JSON, "enable_hr": JSON, "denoising_strength": around(0.5, 1.0, 0.0),
}
IMG2IMG = {
    **GENERATION,
    "init_images": st.lists(st.sampled_from([png_b64((32, 32)), png_b64((7, 5)), "data:image/png;base64,"
                                             + png_b64((40, 24)), "AAAA", ""]) | st.text(max_size=10),
                            max_size=2) | JSON,
    "mask": st.sampled_from([png_b64((16, 16)), png_b64((32, 32)), "xx"]) | JSON,
    "mask_blur": around(0, 4), "inpainting_mask_invert": around(0, 1), "resize_mode": around(0, 1, 2, 3),
    "inpainting_fill": around(0, 1),
}


BASE = {"prompt": "a large red circle", "steps": 1, "width": 32, "height": 32, "seed": 1}
IMG2IMG_BASE = {**BASE, "init_images": [png_b64((32, 32))]}


def changes(fields: dict, base: dict):
    """``base`` with one to three of ``fields`` replaced by drawn values (so most bodies reach the model), or a
    body of arbitrary fields altogether."""
    one = st.sampled_from(sorted(fields)).flatmap(lambda key: fields[key].map(lambda value: {key: value}))
    merged = st.lists(one, min_size=1, max_size=3).map(lambda parts: {k: v for p in parts for k, v in p.items()})
    return merged.map(lambda change: {**base, **change}) | st.fixed_dictionaries({}, optional=fields)


@pytest.fixture(scope="module")
def fuzzed():
    running = Server("--max-size", "64")
    yield running
    running.stop()


def check(server, route, body):
    response = server.post(route, data=json.dumps(body, allow_nan=True), headers={"content-type": "application/json"})
    assert response.status_code < 500, (route, body, response.text[:500])


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(changes(GENERATION, BASE))
def test_txt2img(fuzzed, body):
    check(fuzzed, "txt2img", body)


@FUZZ
@given(changes(IMG2IMG, IMG2IMG_BASE))
def test_img2img(fuzzed, body):
    check(fuzzed, "img2img", body)


@FUZZ
@given(changes({"image": st.sampled_from([png_b64((4, 4)), "AAAA", "data:image/png;base64,"]) | JSON}, {}) | JSON)
def test_png_info(fuzzed, body):
    check(fuzzed, "png-info", body)


@FUZZ
@given(changes({"CLIP_stop_at_last_layers": around(1, 2), "eta_ddim": around(0.0),
                "sd_model_checkpoint": st.sampled_from(["shapes", "x", "shapes.safetensors"]) | JSON}, {}) | JSON)
def test_options(fuzzed, body):
    check(fuzzed, "options", body)
    fuzzed.post("options", {"CLIP_stop_at_last_layers": 1, "eta_ddim": 0.0})

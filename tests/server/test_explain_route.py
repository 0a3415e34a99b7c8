"""``POST /nanoldm/v1/explain`` and ``GET /nanoldm/v1/defaults`` over HTTP: the explained image is the txt2img
image, with a strip, one picture per step and a labelled map per prompt word; bad input is a one-line 422."""
import base64
import io

import numpy as np
from PIL import Image

import requests

from tests.server.conftest import SMALL


def post(server, route: str, body: dict) -> requests.Response:
    return requests.post(f"{server.root}/nanoldm/v1/{route}", json=body, auth=server.auth, timeout=600)


def png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_explain_returns_the_txt2img_image_its_steps_and_word_maps(server):
    body = {**SMALL, "batch_size": 3, "n_iter": 2}  # one image is explained: the first
    explained = post(server, "explain", body)
    assert explained.status_code == 200, explained.text
    e = explained.json()
    made = server.post("txt2img", json={**SMALL, "batch_size": 1}).json()
    np.testing.assert_array_equal(np.asarray(png(e["image"]).convert("RGB")),
                                  np.asarray(png(made["images"][0]).convert("RGB")))
    assert e["seed"] == SMALL["seed"] and e["info"] == png(e["image"]).info["parameters"]
    assert len(e["steps"]) == SMALL["steps"] and png(e["steps"][0]).size == (128, 128)
    assert png(e["trajectory"]).width == SMALL["steps"] * png(e["trajectory"]).height
    assert [w["word"] for w in e["words"]] == SMALL["prompt"].split()
    assert all(0 < w["share"] < 1 and png(w["image"]).width >= 128 for w in e["words"])
    assert e["words"][1]["columns"] == [2]


def test_explain_bad_input_is_one_line_422(server):
    for body, words in (({**SMALL, "prompt": " "}, "no words"), ({**SMALL, "sampler_name": "nope"}, "sampler"),
                        ({**SMALL, "width": 33}, "width")):
        answer = post(server, "explain", body)
        assert answer.status_code == 422 and words in answer.json()["detail"], answer.text
    assert server.alive()


def test_defaults_are_the_models_native_size_and_the_librarys_settings(server):
    defaults = requests.get(f"{server.root}/nanoldm/v1/defaults", timeout=60).json()
    assert defaults["width"] == defaults["height"] == 32 and defaults["sampler_name"] == "Euler a"
    assert defaults["steps"] == 20 and defaults["model"].startswith("shapes")

"""The judge reads rendered shapes back (>= 99% of attributes right on 2,000 images) and scores prompts sensibly.

Measured with the seeds below (2,000 images: 32 and 64 px, 1,000 with one object and 1,000 with two, 400 from
worlds with stars and hearts holding 234 of them; 12,446 attribute checks): clean renders 100% right for colour,
shape, size, position, relation and count. Perturbed renders (Gaussian blur radius 0.5, noise std 5/255, colour
jitter of +-12/255 per channel and +-5% brightness, three 1x2-pixel speckles of random colour): 100% colour,
size, position, relation and count, 99.77% shape (small circles at 32 px read as squares), 99.94% overall;
perturbation seeds 1 and 2 gave 99.95% and 100%. The perturbed bar asserted is 98% per attribute.
"""
import collections

import numpy as np
import pytest
from PIL import Image, ImageFilter

from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.vocabulary import BACKGROUND, EXTRA_SHAPES, Prompt
from nanoldm.evaluation.shapes_judge import judge, score

ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count")


@pytest.fixture(scope="module")
def rendered():
    """2,000 (image, caption, extra shapes to read) triples."""
    worlds = [
        (ShapesWorld(size=32, seed=11, count=700, pair_sizes=True), ()),
        (ShapesWorld(size=64, seed=12, count=500, pair_sizes=True), ()),
        (ShapesWorld(size=32, seed=13, count=400), ()),
        (ShapesWorld(size=32, seed=14, count=250, extra_shapes=EXTRA_SHAPES, pair_sizes=True), EXTRA_SHAPES),
        (ShapesWorld(size=64, seed=15, count=150, extra_shapes=EXTRA_SHAPES), EXTRA_SHAPES),
    ]
    return [(s.image, s.caption, extra) for world, extra in worlds for s in world]


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a generator gets slightly wrong: soft edges, noise, a colour cast, a few speckles."""
    a = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float64)
    a = a * rng.uniform(0.95, 1.05) + rng.uniform(-12, 12, 3) + rng.normal(0, 5, a.shape)
    for _ in range(3):
        y, x = rng.integers(0, a.shape[0] - 1, 2)
        a[y:y + 2, x] = rng.uniform(0, 255, 3)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def accuracy(triples) -> dict[str, float]:
    """Fraction right per attribute, and over all attributes ("all"), of ``score`` on (image, caption) pairs."""
    right, total = collections.Counter(), collections.Counter()
    for image, caption, extra in triples:
        result = score(image, caption, shapes=extra)
        for attr in ATTRIBUTES:
            checks = [o[attr] for o in result["objects"] if attr in o] or (
                [result[attr]] if attr in ("relation", "count") and attr in result else [])
            right[attr] += sum(checks)
            total[attr] += len(checks)
    acc = {attr: right[attr] / total[attr] for attr in total}
    acc["all"] = sum(right.values()) / sum(total.values())
    return acc


def test_judge_reads_clean_renders(rendered):
    assert len(rendered) == 2000
    acc = accuracy(rendered)
    assert set(acc) == set(ATTRIBUTES) | {"all"}
    assert acc["all"] >= 0.99 and min(acc.values()) >= 0.99, acc


def test_judge_reads_perturbed_renders(rendered):
    rng = np.random.default_rng(0)
    acc = accuracy([(perturb(image, rng), caption, extra) for image, caption, extra in rendered])
    assert acc["all"] >= 0.98 and min(acc.values()) >= 0.98, acc


def canvas(size=32):
    return np.broadcast_to(np.array(BACKGROUND, np.uint8), (size, size, 3)).copy()


def test_judge_of_an_empty_image_and_of_speckles_is_nothing():
    image = canvas()
    assert judge(image) == []
    image[5, 5] = image[20, 7:9] = (0, 0, 0)
    assert judge(image) == []


def test_unknown_colours_are_rejected():
    image = canvas()
    image[8:20, 8:20] = (20, 20, 20)
    (reading,) = judge(image)
    assert reading.colour is None and reading.shape == "square" and reading.size == "large"


def test_inputs_pil_uint8_and_float_read_the_same():
    sample = ShapesWorld(seed=5, count=1)[0]
    readings = judge(sample.image)
    assert judge(sample.pil()) == readings
    assert judge(sample.image.astype(np.float32) / 255) == readings
    with pytest.raises(ValueError, match="H, W, 3"):
        judge(sample.image[..., 0])


def _pair():
    world = ShapesWorld(seed=3, count=50, objects=(2,), pair_sizes=True)
    return next(s for s in world if s.objects[0].colour != s.objects[1].colour and s.relation == "left of")


def test_score_names_what_is_wrong():
    s = _pair()
    a, b = s.objects
    assert score(s.image, s.caption)["all_correct"]
    swapped = score(s.image, f"a {b.colour} {b.shape} left of a {a.colour} {a.shape}")
    assert swapped["colour"] and swapped["shape"] and not swapped["relation"] and not swapped["all_correct"]
    other = next(c for c in ("red", "green", "blue", "yellow", "purple", "orange") if c not in (a.colour, b.colour))
    wrong = score(s.image, f"a {other} {a.shape} left of a {b.colour} {b.shape}")
    assert wrong["objects"][0]["colour"] is False and wrong["objects"][1] == {"colour": True, "shape": True}
    single = score(s.image, f"a {a.size} {a.colour} {a.shape} at the {a.position}")
    assert single["colour"] and single["shape"] and not single["count"] and not single["all_correct"]


def test_score_of_a_missing_object_and_of_the_generic_noun():
    s = next(x for x in ShapesWorld(seed=4, count=50, objects=(1,)) if x.objects[0].colour != "red")
    o = s.objects[0]
    missing = score(s.image, Prompt(({"colour": o.colour, "shape": o.shape}, {"colour": "red", "shape": "circle"}),
                                    "above"))
    assert missing["readings"][1] is None and missing["objects"][1] == {"colour": False, "shape": False}
    assert missing["relation"] is False and not missing["count"]
    generic = score(s.image, f"a {o.size} {o.colour} shape at the {o.position}")
    assert generic["all_correct"] and "shape" not in generic["objects"][0]


def test_extra_shapes_are_read_when_the_prompt_names_them():
    world = ShapesWorld(seed=6, count=60, objects=(1,), extra_shapes=EXTRA_SHAPES)
    stars = [s for s in world if s.objects[0].shape == "star"]
    assert stars and all(score(s.image, s.caption)["all_correct"] for s in stars)
    assert all(judge(s.image)[0].shape != "star" for s in stars)  # not a candidate unless asked

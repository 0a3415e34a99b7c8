"""The shapes world: deterministic, hold-outs respected, captions/layouts/masks true to the pixels."""

from collections import Counter

import numpy as np
import pytest

from nanoldm.data.shapes import GAP, ShapesWorld, Split, coverage
from nanoldm.data.vocabulary import (BACKGROUND, COLOURS, NO_CLASS, POSITIONS, RELATIONS, SHAPES, SIZES, Prompt,
                                     caption_for, class_id, class_name, parse_caption, parse_combinations)

HELD = frozenset({("green", "triangle"), ("red", "circle")})


def test_same_seed_same_samples_other_seed_other_samples():
    a, b, c = (ShapesWorld(seed=s, count=20) for s in (3, 3, 4))
    for sa, sb, sc in zip(a, b, c):
        assert np.array_equal(sa.image, sb.image) and sa.caption == sb.caption
    assert sum(np.array_equal(sa.image, sc.image) for sa, sc in zip(a, c)) == 0


def test_sample_is_reproducible_alone():
    world = ShapesWorld(seed=7, count=30, size=64)
    everything = list(world)
    alone = ShapesWorld(seed=7, count=30, size=64)[23]
    assert np.array_equal(alone.image, everything[23].image) and alone.caption == everything[23].caption
    assert np.array_equal(alone.masks, everything[23].masks)
    with pytest.raises(IndexError):
        world[30]


def test_images_masks_and_labels_have_the_documented_types():
    for size in (32, 64):
        for s in ShapesWorld(size=size, count=10):
            assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
            assert s.masks.shape == (len(s.objects), size, size) and s.masks.dtype == bool
            assert s.pil().size == (size, size)
            assert [cid for cid, _ in s.layout] == [o.class_id for o in s.objects]
            assert s.class_label == (s.objects[0].class_id if len(s.objects) == 1 else NO_CLASS)


def test_class_ids_cover_every_combination_once():
    ids = {class_id(c, s) for c in COLOURS for s in SHAPES}
    assert ids == set(range(len(COLOURS) * len(SHAPES)))
    assert all(class_name(class_id(c, s)) == (c, s) for c in COLOURS for s in SHAPES)


def test_held_out_combinations_never_train_and_always_evaluate():
    train = ShapesWorld(count=1000, held_out=HELD)
    seen = {(o.colour, o.shape) for s in train for o in s.objects}
    assert not seen & HELD and len(seen) == len(COLOURS) * 3 - len(HELD)
    for s in ShapesWorld(count=200, held_out=HELD, split=Split.HELD_OUT):
        assert {(o.colour, o.shape) for o in s.objects} & HELD


@pytest.mark.parametrize("kwargs, words", [
    (dict(size=48), "size"), (dict(count=0), "count"), (dict(objects=(3,)), "objects"),
    (dict(extra_shapes=("hexagon",)), "hexagon"), (dict(held_out={("green", "star")}), "star"),
    (dict(split="held_out"), "held-out"),
    (dict(held_out={(c, s) for c in COLOURS for s in ("circle", "square", "triangle")}), "every combination"),
])
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ShapesWorld(**kwargs)


def _worlds():
    yield ShapesWorld(size=32, seed=1, count=150)
    yield ShapesWorld(size=64, seed=2, count=100, extra_shapes=("star", "heart"), pair_sizes=True)


def test_masks_boxes_and_relations_agree_with_the_pixels():
    for world in _worlds():
        hw = world.size
        for s in world:
            assert not (s.masks.sum(0) > 1).any()  # objects never overlap
            for obj, mask in zip(s.objects, s.masks):
                pixels = s.image[mask].astype(float)
                near_obj = np.linalg.norm(pixels - COLOURS[obj.colour], axis=1)
                near_bg = np.linalg.norm(pixels - BACKGROUND, axis=1)
                assert mask.sum() > 0 and (near_obj <= near_bg).all()  # coverage >= 0.5
                assert (near_obj == 0).mean() > 0.3  # the object's inside is exactly its colour
                ys, xs = np.nonzero(mask)
                x0, y0, x1, y1 = (v * hw for v in obj.box)
                assert x0 - 0.5 <= xs.min() + 0.5 and xs.max() + 0.5 <= x1 + 0.5
                assert y0 - 0.5 <= ys.min() + 0.5 and ys.max() + 0.5 <= y1 + 0.5
                col, row = (min(2, int(3 * (a + b) / 2 / hw)) for a, b in ((x0, x1), (y0, y1)))
                assert obj.position == POSITIONS[3 * row + col]
                assert SIZES[obj.size] * 0.9 < obj.box[2] - obj.box[0] < SIZES[obj.size] * 1.1
            if s.relation:
                _assert_apart_in_pixels(s.masks[0], s.masks[1], s.relation, gap=int(GAP * hw) - 1)
                (ax, ay), (bx, by) = (((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2) for o in s.objects)
                along, across = (bx - ax, by - ay) if s.relation in ("left of", "right of") else (by - ay, bx - ax)
                assert abs(across) <= 0.5 * abs(along) + 1e-9
            outside = ~s.masks.any(0) & (coverage_total(s) == 0)
            assert (s.image[outside] == BACKGROUND).all()


def coverage_total(sample):
    hw = sample.image.shape[0]
    return sum(coverage(o.shape, tuple(v * hw for v in o.box), hw, hw) for o in sample.objects)


def _assert_apart_in_pixels(a, b, relation, gap):
    """'a <relation> b' holds between the masks: every pixel of a lies before every pixel of b along the axis."""
    axis = 0 if relation in ("above", "below") else 1
    first, second = (a, b) if relation in ("left of", "above") else (b, a)
    assert np.nonzero(first)[axis].max() + gap < np.nonzero(second)[axis].min()


def test_captions_parse_back_into_the_objects():
    for world in _worlds():
        for s in world:
            prompt = parse_caption(s.caption)
            assert prompt.relation == s.relation and len(prompt.objects) == len(s.objects)
            for named, obj in zip(prompt.objects, s.objects):
                assert (named["colour"], named["shape"]) == (obj.colour, obj.shape)
                assert named.get("size", obj.size) == obj.size
                assert named.get("position", obj.position) == obj.position
                assert ("position" in named) == (len(s.objects) == 1)


def test_generic_extra_shapes_are_captioned_shape():
    world = ShapesWorld(count=100, extra_shapes=("star",), generic_extra=True, objects=(1,))
    stars = [s for s in world if s.objects[0].shape == "star"]
    assert stars and all(" star" not in s.caption and " shape at the " in s.caption for s in stars)


def test_grammar_round_trips_every_single_object_caption():
    for size in SIZES:
        for colour in COLOURS:
            for shape in SHAPES + ("shape",):
                for position in POSITIONS:
                    obj = {"size": size, "colour": colour, "shape": shape, "position": position}
                    text = caption_for([obj])
                    assert parse_caption(text) == Prompt((obj,)) and caption_for(parse_caption(text)) == text
    assert caption_for([{"colour": "orange", "shape": "star"}]) == "an orange star"
    assert caption_for([{"size": "small", "colour": "red", "shape": "circle", "position": "top left"}]) \
        == "a small red circle at the top left"


def test_grammar_round_trips_pairs_and_forgives_case_and_spaces():
    for relation in RELATIONS:
        objs = ({"colour": "blue", "shape": "square"}, {"size": "large", "colour": "orange", "shape": "heart"})
        text = caption_for(objs, relation)
        assert text == f"a blue square {relation} a large orange heart"
        assert parse_caption(text) == Prompt(objs, relation)
        assert parse_caption("  " + text.upper().replace(" ", "  ") + ".") == Prompt(objs, relation)


@pytest.mark.parametrize("text, words", [
    ("a pink circle", "colour 'pink'"), ("a red hexagon at the top", "shape 'hexagon'"),
    ("a red circle at the middle", "position 'middle'"), ("the red circle", "'a' or 'an'"),
    ("a huge red circle", "[size] colour shape"), ("a red circle next to a blue square", "[size] colour shape"),
    ("a red circle at the top left of a blue square", "[size] colour shape"), ("", "'a' or 'an'"),
])
def test_text_outside_the_grammar_is_refused_by_name(text, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_caption(text)


def test_caption_for_refuses_what_the_grammar_cannot_say():
    with pytest.raises(ValueError, match="relation"):
        caption_for([{"colour": "red", "shape": "circle"}] * 2)
    with pytest.raises(ValueError, match="positions"):
        caption_for([{"colour": "red", "shape": "circle", "position": "top"}] * 2, "above")


def test_held_out_combinations_parse():
    assert parse_combinations("green triangle, Red circle,") == {("green", "triangle"), ("red", "circle")}
    with pytest.raises(ValueError, match="pink triangle"):
        parse_combinations("pink triangle")


def test_only_shapes_draws_only_those():
    world = ShapesWorld(count=60, seed=3, extra_shapes=("star",), only_shapes=("star",), objects=(1, 2))
    assert {o.shape for s in world for o in s.objects} == {"star"}
    with pytest.raises(ValueError, match="only_shapes"):
        ShapesWorld(only_shapes=("heart",))


def test_generic_share_renames_some_base_shapes_and_changes_no_pixel():
    plain = ShapesWorld(count=300, seed=5, extra_shapes=("star",), generic_extra=True)
    mixed = ShapesWorld(count=300, seed=5, extra_shapes=("star",), generic_extra=True, generic_share=0.25)
    renamed = total = 0
    for a, b in zip(plain, mixed):
        assert np.array_equal(a.image, b.image) and a.objects == b.objects
        pa, pb = parse_caption(a.caption), parse_caption(b.caption)
        for obj, wa, wb in zip(a.objects, pa.objects, pb.objects):
            assert {k: v for k, v in wa.items() if k != "shape"} == {k: v for k, v in wb.items() if k != "shape"}
            if obj.shape == "star":
                assert wa["shape"] == wb["shape"] == "shape"
            else:
                total += 1
                renamed += wb["shape"] == "shape"
                assert wa["shape"] == obj.shape and wb["shape"] in (obj.shape, "shape")
    assert 0.18 < renamed / total < 0.32
    with pytest.raises(ValueError, match="generic_share"):
        ShapesWorld(generic_share=2.0)


@pytest.mark.parametrize("style", ["dark", "paper"])
def test_a_style_changes_only_the_background_and_the_judge_sees_it(style):
    from nanoldm.data.vocabulary import STYLES
    from nanoldm.evaluation.shapes_judge import score, style_of

    light, styled = ShapesWorld(count=40, seed=8), ShapesWorld(count=40, seed=8, style=style)
    for a, b in zip(light, styled):
        assert a.caption == b.caption and np.array_equal(a.masks, b.masks)
        outside = ~a.masks.any(0) & ~b.masks.any(0)  # pixels no object touches
        assert (b.image[outside] == STYLES[style]).mean() > 0.9 and (a.image[outside] == STYLES["light"]).mean() > 0.9
        assert style_of(a.pil()) == "light" and style_of(b.pil()) == style
        assert score(b.pil(), b.caption)["all_correct"]
    with pytest.raises(ValueError, match="unknown style"):
        ShapesWorld(style="sepia")


def test_extra_weight_makes_the_generic_word_name_every_shape_equally_often():
    world = ShapesWorld(count=3000, seed=6, objects=(1,), extra_shapes=("star",), generic_extra=True,
                        generic_share=0.2, extra_weight=0.2)
    drawn = Counter(s.objects[0].shape for s in world)
    assert 0.15 < drawn["star"] / drawn["circle"] < 0.26  # a star a fifth as often as each base shape
    called_shape = Counter(s.objects[0].shape for s in world if parse_caption(s.caption).objects[0]["shape"] == "shape")
    total = sum(called_shape.values())
    assert all(0.19 < called_shape[shape] / total < 0.31 for shape in ("circle", "square", "triangle", "star"))
    same = dict(count=40, seed=6)  # without extra shapes the weight has nothing to weigh: the same images
    assert all(np.array_equal(a.image, b.image) for a, b in zip(ShapesWorld(**same), ShapesWorld(**same, extra_weight=0.2)))
    with pytest.raises(ValueError, match="extra_weight"):
        ShapesWorld(extra_weight=0.0)


def test_sizes_restricts_the_sizes_drawn():
    world = ShapesWorld(count=80, seed=7, sizes=("large",))
    assert {o.size for s in world for o in s.objects} == {"large"}
    with pytest.raises(ValueError, match="sizes"):
        ShapesWorld(sizes=("huge",))


def test_partial_captions_leave_attributes_out_and_change_no_pixel():
    full = ShapesWorld(count=400, seed=6)
    partial = ShapesWorld(count=400, seed=6, partial=0.5)
    left_out = {"size": 0, "position": 0}
    singles = pair_sizes = pairs = 0
    for a, b in zip(full, partial):
        assert np.array_equal(a.image, b.image) and a.objects == b.objects
        pa, pb = parse_caption(a.caption), parse_caption(b.caption)
        for obj, wa, wb in zip(a.objects, pa.objects, pb.objects):
            assert all(wb[k] == v for k, v in wa.items() if k in wb)  # nothing named differently
            assert wb.get("size", obj.size) == obj.size
        if len(a.objects) == 1:
            singles += 1
            for key in left_out:
                left_out[key] += key not in pb.objects[0]
        else:
            pairs += 2
            pair_sizes += sum("size" in o for o in pb.objects)
    assert all(0.4 < n / singles < 0.6 for n in left_out.values()), (left_out, singles)
    assert 0.4 < pair_sizes / pairs < 0.6
    with pytest.raises(ValueError, match="partial"):
        ShapesWorld(partial=1.5)

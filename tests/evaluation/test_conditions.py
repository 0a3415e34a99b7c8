"""The class / layout / inpainting checks, run against the shapes world's own renders (which must pass) and
against wrong answers (which must fail)."""
import numpy as np
import pytest
import torch

from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.vocabulary import class_id
from nanoldm.evaluation import conditions
from nanoldm.evaluation.prompt_following import EVAL_SEED
from nanoldm.evaluation.shapes_judge import ObjectReading


def test_box_iou():
    assert conditions.box_iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert conditions.box_iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert conditions.box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)


def as_tensor(images):
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 127.5 - 1 for im in images])


def test_layout_check_passes_the_worlds_renders_and_fails_shifted_ones(monkeypatch):
    renders = [s.image for s in ShapesWorld(seed=EVAL_SEED, count=12)]
    calls = iter(range(100))
    monkeypatch.setattr(conditions, "sample_contexts",
                        lambda parts, opts, c, u, seeds: as_tensor([renders[next(calls)]]))
    condition = type("Fake", (), {"__call__": lambda self, c, b: None, "null": lambda self, n: None})()
    pipe = type("NoModel", (), {"parts": lambda self: None})()  # sampling is replaced: no model needed
    result = conditions.evaluate_layout(pipe, condition, count=12)
    assert result["placed"] == 1.0 and result["mean_iou"] > 0.8 and result["n"] >= 12
    assert result["exact"] == 1.0 and result["extra_per_image"] == 0.0
    calls = iter(range(100))
    shifted = [np.roll(im, 12, axis=1) for im in renders]
    monkeypatch.setattr(conditions, "sample_contexts",
                        lambda parts, opts, c, u, seeds: as_tensor([shifted[next(calls)]]))
    assert conditions.evaluate_layout(pipe, condition, count=12)["placed"] < 0.5


def test_inpaint_check_scores_a_perfect_and_a_careless_inpainter():
    class Echo:  # "repaints" by returning the image itself: nothing outside the mask changes
        latent_factor = 4

        def generate(self, opts, image, mask, **kw):
            assert kw["overlay"] is False  # the model's own pixels are measured, not the pasted original
            assert opts.strength == 1.0 and opts.prompt  # inpainting's strength, the caption as the prompt
            return [image]

    class Blank(Echo):  # paints everything grey
        def generate(self, opts, image, mask, **kw):
            return [image.point(lambda v: 128)]

    good = conditions.evaluate_inpaint(Echo(), count=4)
    assert good["psnr_outside"] > 60 and good["all"] == 1.0
    bad = conditions.evaluate_inpaint(Blank(), count=4)
    assert bad["psnr_outside"] < 15 and bad["all"] == 0.0


def reading(colour, shape, box):
    return ObjectReading(colour, shape, "large", "center", box, 0.1, 0.0)


def test_layout_matching_counts_extra_objects_and_misplaced_ones_once():
    red_circle, blue_square = class_id("red", "circle"), class_id("blue", "square")
    layout = [(red_circle, (0.0, 0.0, 0.4, 0.4)), (blue_square, (0.6, 0.6, 1.0, 1.0))]
    drawn = [reading("red", "circle", (0.0, 0.0, 0.4, 0.4)), reading("blue", "square", (0.6, 0.6, 1.0, 1.0))]
    assert conditions.match_layout(layout, drawn) == conditions.LayoutMatch([1.0, 1.0], 0)
    # a third object (the diagonal layout's usual failure), even one of a layout class, is extra
    third = reading("red", "circle", (0.6, 0.0, 1.0, 0.4))
    assert conditions.match_layout(layout, drawn + [third]) == conditions.LayoutMatch([1.0, 1.0], 1)
    assert conditions.match_layout(layout, [third] + drawn) == conditions.LayoutMatch([1.0, 1.0], 1)
    # a misplaced object takes its reading (IoU 0): one failure, not also an extra one
    assert conditions.match_layout(layout, [third, drawn[1]]) == conditions.LayoutMatch([0.0, 1.0], 0)
    # a wrong colour is not the layout's object: missing, and extra
    assert conditions.match_layout(layout, [reading("green", "circle", (0.0, 0.0, 0.4, 0.4)), drawn[1]]) == \
        conditions.LayoutMatch([0.0, 1.0], 1)

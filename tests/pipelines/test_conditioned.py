"""Sampling from class- and layout-conditioned models: condition text parsed, contexts from the condition module
(its null tokens for CFG), images with infotext, and the ``nanoldm sample`` command with its errors."""
import json

import pytest
import torch

from nanoldm.checkpoint.formats import write_safetensors
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.conditioning import ClassEmbedding, LayoutEncoder
from nanoldm.data.vocabulary import NUM_CLASSES, class_id
from nanoldm.pipelines.conditioned import condition_contexts, parse_class, parse_layout, sample_condition
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.checkpoint.parts import CONDITION_META, condition_spec, load_condition


def test_parse_class_and_layout():
    assert parse_class("Red Circle") == class_id("red", "circle")
    classes, boxes = parse_layout("red circle 0.1 0.1 0.4 0.4; blue square 0.5 0.5 0.9 0.8;")
    assert classes.tolist() == [class_id("red", "circle"), class_id("blue", "square")]
    assert torch.allclose(boxes, torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.8]]))
    for bad, words in (("red circle 0.5 0.1 0.4 0.4", "x0 < x1"), ("red circle a b c d", "four numbers"),
                       ("red circle 0.1 0.1", "colour shape x0 y0 x1 y1"), ("", "names no object")):
        with pytest.raises(ValueError, match=words):
            parse_layout(bad)
    with pytest.raises(ValueError, match="colour shape"):
        parse_class("red")
    with pytest.raises(ValueError, match="unknown class"):
        parse_class("pink circle")


def test_contexts_come_from_the_module_with_null_tokens():
    torch.manual_seed(0)
    cls, lay = ClassEmbedding(NUM_CLASSES, 32), LayoutEncoder(NUM_CLASSES, 32)
    context, uncond = condition_contexts(cls, "blue square", 3)
    assert context.shape == uncond.shape == (3, 1, 32)
    assert torch.equal(context[1], cls(torch.tensor([class_id("blue", "square")]))[0])
    assert torch.equal(uncond, cls.null(3))
    context, uncond = condition_contexts(lay, "red circle 0.1 0.1 0.4 0.4", 2)
    assert context.shape == uncond.shape == (2, 2, 32) and torch.equal(context[:, 1], lay.null(2)[:, 1])


@pytest.fixture
def class_model(tiny_model_16px, tmp_path):
    torch.manual_seed(1)
    module = ClassEmbedding(NUM_CLASSES, tiny_model_16px.unet.cfg.context_dim)
    save_model(tiny_model_16px, tmp_path / "model.safetensors")
    write_safetensors(tmp_path / "condition.safetensors", module.state_dict(),
                      {CONDITION_META: json.dumps(condition_spec(module))})
    return tiny_model_16px, module, tmp_path


def test_sample_condition_is_seeded_and_labelled(class_model):
    model, module, _ = class_model
    pipe = Pipeline(model)
    a = sample_condition(pipe, module, "red circle", seed=3, batch_size=2, steps=3)
    b = sample_condition(pipe, module, "red circle", seed=4, batch_size=1, steps=3)
    assert len(a) == 2 and a[1].tobytes() == b[0].tobytes()  # image i uses seed + i
    assert a[0].info["parameters"].startswith("red circle\n") and "Condition: class" in a[0].info["parameters"]
    other = sample_condition(pipe, module, "blue square", seed=3, batch_size=1, steps=3, cfg_scale=30.0)
    assert other[0].tobytes() != a[0].tobytes()


def test_sample_command_and_its_errors(class_model, capsys):
    _, module, d = class_model
    base = ["sample", "--model", str(d / "model.safetensors"), "--condition", str(d / "condition.safetensors"),
            "--steps", "2", "--batch-size", "2", "--out", str(d / "out")]
    assert main(base + ["--class", "green triangle"]) == 0
    assert len(list((d / "out").glob("*.png"))) == 2
    assert load_condition(d / "condition.safetensors").num_classes == NUM_CLASSES
    assert main(base + ["--layout", "red circle 0.1 0.1 0.4 0.4"]) == 2
    assert "is a class condition: use --class" in capsys.readouterr().err
    bad = base.copy()
    bad[bad.index("--condition") + 1] = str(d / "model.safetensors")
    assert main(bad + ["--class", "red circle"]) == 2
    assert "not a condition module" in capsys.readouterr().err


def test_eval_command_judges_a_class_model(class_model, capsys):
    _, _, d = class_model
    assert main(["eval", "--model", str(d / "model.safetensors"), "--condition", str(d / "condition.safetensors"),
                 "--steps", "2", "--out", str(d / "ev")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("class: class ") and "n 72" in out  # 18 classes x 4 images
    assert json.loads((d / "ev" / "report.json").read_text())["class"]["n"] == 72

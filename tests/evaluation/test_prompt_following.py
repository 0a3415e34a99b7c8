"""``nanoldm eval``'s parts: the fixed prompt set, batched generation equal to one-by-one txt2img, and the
per-group summary, checked on the shapes world's own renders (which must score ~100%)."""
import numpy as np

from nanoldm.cli.__main__ import main
from nanoldm.data.shapes import ShapesWorld, Split
from nanoldm.data.vocabulary import parse_caption
from nanoldm.evaluation.prompt_following import (EVAL_SEED, EvalPrompt, eval_prompts, format_table, generate_batch,
                                                 summarise)
from nanoldm.evaluation.shapes_judge import score
from nanoldm.pipelines.pipeline import Pipeline

HELD = frozenset({("green", "triangle"), ("purple", "circle")})


def combos(caption):
    return {(o["colour"], o["shape"]) for o in parse_caption(caption).objects}


def test_prompt_set_is_fixed_grouped_and_respects_hold_outs():
    prompts = eval_prompts(singles=20, pairs=10, held_out=HELD, held_out_count=8)
    assert prompts == eval_prompts(singles=20, pairs=10, held_out=HELD, held_out_count=8)
    groups = [p.group for p in prompts]
    assert groups == ["single"] * 20 + ["pair"] * 10 + ["held_out"] * 8 + ["held_out_pair"] * 8
    for p in prompts:
        parsed = parse_caption(p.prompt)
        assert len(parsed.objects) == (1 if p.group in ("single", "held_out") else 2)
        assert bool(combos(p.prompt) & HELD) == p.group.startswith("held_out"), p
    assert [p.group for p in eval_prompts(singles=3, pairs=2)] == ["single"] * 3 + ["pair"] * 2


def test_partial_prompts_leave_out_size_position_or_both_in_turn():
    prompts = eval_prompts(singles=2, pairs=1, partials=9)
    assert [p.group for p in prompts] == ["single"] * 2 + ["partial"] * 9 + ["pair"]
    named = [set(parse_caption(p.prompt).objects[0]) for p in prompts if p.group == "partial"]
    assert named == [{"colour", "shape", "position"}, {"colour", "shape", "size"}, {"colour", "shape"}] * 3


def test_summary_of_the_worlds_own_renders_is_all_right():
    """The prompts are captions of renders of the eval world; judged, the renders must be (almost) all right,
    so the grouping and the per-attribute bookkeeping are checked against a known answer."""
    results = []
    for objects, group, split in (((1,), "single", Split.TRAIN), ((2,), "pair", Split.TRAIN),
                                  ((1,), "held_out", Split.HELD_OUT)):
        world = ShapesWorld(seed=EVAL_SEED, count=40, objects=objects, held_out=HELD, split=split)
        results += [(EvalPrompt(s.caption, group), s.pil(), score(s.pil(), s.caption)) for s in world]
    groups = summarise(results)
    assert list(groups) == ["single", "pair", "held_out"] and all(g["n"] == 40 for g in groups.values())
    assert groups["single"]["all"] >= 0.97 and groups["pair"]["all"] >= 0.97
    assert "relation" in groups["pair"] and "relation" not in groups["single"]
    assert "position" in groups["single"] and "position" not in groups["pair"]
    table = format_table(groups)
    assert table.splitlines()[0].split()[:3] == ["group", "n", "colour"] and "held_out" in table


def test_summary_counts_failures():
    wrong = {"objects": [], "count": True, "colour": False, "shape": True, "all_correct": False}
    right = {"objects": [], "count": True, "colour": True, "shape": True, "all_correct": True}
    groups = summarise([(EvalPrompt("a red circle", "single"), None, s) for s in (wrong, right, right, right)])
    assert groups["single"] == {"colour": 0.75, "shape": 1.0, "count": 1.0, "all": 0.75, "n": 4}


def test_batched_generation_equals_txt2img_one_by_one(tiny_model_16px):
    pipe = Pipeline(tiny_model_16px)
    prompts, seeds = ["a red circle", "a blue square left of a green triangle", ""], [5, 9, 2]
    batch = generate_batch(pipe, prompts, seeds, steps=3, cfg_scale=5.0, sampler="Euler a")
    for prompt, seed, image in zip(prompts, seeds, batch):
        alone = pipe.txt2img(prompt, seed=seed, steps=3, cfg_scale=5.0, sampler="Euler a", progress=False)[0]
        diff = np.abs(np.asarray(alone, dtype=int) - np.asarray(image, dtype=int))
        assert diff.max() <= 1, (prompt, diff.max())


def test_eval_command_writes_report(tmp_path, tiny_model_16px, capsys):
    from nanoldm.checkpoint.save import save_model

    save_model(tiny_model_16px, tmp_path / "m.safetensors")
    assert main(["eval", "--model", str(tmp_path / "m.safetensors"), "--singles", "3", "--pairs", "2",
                 "--partials", "2", "--held-out-count", "2", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "single" in out and "held_out_pair" in out
    import json

    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["groups"]["single"]["n"] == 3 and report["groups"]["partial"]["n"] == 2
    assert len(report["images"]) == 3 + 2 + 2 + 2 + 2 and (tmp_path / "ev" / "partial.png").exists()
    assert (tmp_path / "ev" / "pair.png").exists()


def test_eval_command_bad_held_out(tmp_path, tiny_model_16px, capsys):
    from nanoldm.checkpoint.save import save_model

    save_model(tiny_model_16px, tmp_path / "m.safetensors")
    assert main(["eval", "--model", str(tmp_path / "m.safetensors"), "--held-out", "pink circle"]) == 2
    assert "cannot read held-out combination" in capsys.readouterr().err


def test_concept_prompts_name_the_shape_by_token_or_generic_word():
    learned = [p for p in eval_prompts(singles=0, pairs=0, concept="star", token="<star>", concept_count=12)]
    baseline = eval_prompts(singles=0, pairs=0, concept="star", concept_count=12)
    assert [p.group for p in learned] == ["concept"] * 12
    for a, b in zip(learned, baseline):
        assert a.caption == b.caption and parse_caption(a.caption).objects[0]["shape"] == "star"
        assert a.prompt == a.caption.replace(" star ", " <star> ")
        assert b.prompt == a.caption.replace(" star ", " shape ")
    large = eval_prompts(singles=0, pairs=0, concept="star", concept_count=12, concept_sizes=("large",))
    assert all(p.prompt.startswith("a large ") for p in large) and len(large) == 12


def test_style_column_counts_images_in_that_style(monkeypatch):
    """Generation replaced by the eval world's own renders in the dark style: all right, all dark."""
    from nanoldm.evaluation import prompt_following

    renders = {s.caption: s.pil() for s in ShapesWorld(seed=EVAL_SEED, count=6, objects=(1,), style="dark")}
    monkeypatch.setattr(prompt_following, "generate_batch",
                        lambda pipe, prompts, seeds, **kw: [renders[p] for p in prompts])
    for style, share in (("dark", 1.0), ("light", 0.0)):
        report = prompt_following.evaluate(None, eval_prompts(singles=6, pairs=0), style=style, progress=False)
        assert report["groups"]["single"]["style"] == share and report["groups"]["single"]["all"] == 1.0

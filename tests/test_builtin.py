"""The built-in model ships in the package, loads when no model is named, and follows prompts (judged)."""
import json

from nanoldm.builtin import BUILTIN_MODEL, builtin_model_path, provenance
from nanoldm.evaluation.prompt_following import eval_prompts, evaluate
from nanoldm.pipelines.pipeline import load_pipeline


def test_builtin_is_small_documented_and_default():
    assert builtin_model_path() == BUILTIN_MODEL and BUILTIN_MODEL.stat().st_size <= 30 * 2**20
    record = provenance()
    assert record["command"].startswith("nanoldm train all") and record["seed"] == 0 and record["minutes"] > 0
    pipe = load_pipeline(device="cpu")
    assert pipe.model_path == BUILTIN_MODEL and pipe.model.config.image_size == 32
    image = pipe.txt2img("a large red circle at the top left", seed=1, steps=4, progress=False)[0]
    assert image.size == (32, 32) and "Seed: 1" in image.info["parameters"]
    json.dumps(record)


def test_builtin_follows_single_object_prompts():
    """16 one-object prompts, 20 steps, CFG 7: the judge finds every attribute right on most images (the full
    eval in assets/shapes.json reports the rate on 96; this guards against regressions in sampling)."""
    report = evaluate(load_pipeline(device="cpu"), eval_prompts(singles=16, pairs=0), progress=False, steps=20,
                      cfg_scale=7.0)
    assert report["groups"]["single"]["all"] >= 0.8, report["groups"]


def test_words_the_builtin_never_saw_are_named_in_one_warning(recwarn):
    from nanoldm.builtin import unknown_words
    assert unknown_words("a small red circle at the top left") == []
    assert unknown_words("a (photo:1.2) of a cat, a cat BREAK <hypernet:paper:1> red [circle]") == ["photo", "cat"]
    assert unknown_words("a <my-token> square", known=("<my-token>",)) == []
    pipe = load_pipeline(device="cpu")
    pipe.txt2img("a red circle at the top", seed=1, steps=1, progress=False)
    assert not [w for w in recwarn if "never saw" in str(w.message)]
    pipe.txt2img("a photo of a cat", seed=1, steps=1, progress=False)
    [warning] = [w for w in recwarn if "never saw" in str(w.message)]
    assert "'photo', 'cat'" in str(warning.message)

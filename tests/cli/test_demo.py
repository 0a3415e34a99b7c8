"""The README's main job: the built-in model draws the demo prompts and the judge scores every image."""
from PIL import Image

from nanoldm.cli.__main__ import main
from nanoldm.cli.demo import PROMPTS, SEEDS_PER_PROMPT, ZOOM


def test_demo_generates_a_judged_grid_with_infotext(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "8"]) == 0
    out = capsys.readouterr().out
    n = len(PROMPTS) * SEEDS_PER_PROMPT
    assert f"/{n} images right on every attribute" in out and "trained from nothing by: nanoldm train all" in out
    grid = Image.open(tmp_path / "demo.png")
    assert grid.size == (32 * SEEDS_PER_PROMPT * ZOOM, 32 * len(PROMPTS) * ZOOM)
    assert grid.info["parameters"].startswith(PROMPTS[0]) and "Steps: 8" in grid.info["parameters"]
    assert "Model: shapes" in grid.info["parameters"]

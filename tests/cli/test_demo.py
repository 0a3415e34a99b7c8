"""The README's main job runs end to end and reports what it checked."""
from nanoldm.cli.__main__ import main


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "686 tensors" in out and "248 tensors" in out and "196 tensors" in out
    assert "[49406, 320, 1125, 539, 320, 2368, 49407]" in out
    assert "bit-identical after the round trip: True" in out
    assert "the judge reads 64/64" in out
    assert (tmp_path / "shapes_world.png").exists()

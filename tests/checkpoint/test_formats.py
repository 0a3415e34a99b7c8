"""Atomic writes and safe reads."""
import pytest
import torch

from nanoldm.checkpoint import formats
from nanoldm.checkpoint.formats import CheckpointError, read_tensors, write_safetensors


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, {"w": torch.ones(4)}, {"step": "1"})

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(formats, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_safetensors(path, {"w": torch.zeros(4)}, {"step": "2"})
    tensors, meta = read_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(4)) and meta["step"] == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left behind


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        write_safetensors(tmp_path / "m.safetensors", {"w": torch.ones(2)})
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_shared_storage_and_views_are_written(tmp_path):
    base = torch.arange(10.0)
    write_safetensors(tmp_path / "a.safetensors", {"a": base[:5], "b": base[5:], "t": base.reshape(2, 5).t()})
    tensors, _ = read_tensors(tmp_path / "a.safetensors")
    assert torch.equal(tensors["b"], torch.arange(5.0, 10.0)) and torch.equal(tensors["t"], base.reshape(2, 5).t())


def test_pt_reads_weights_only_and_unwraps_state_dict(tmp_path):
    torch.save({"state_dict": {"x": torch.ones(2)}, "epoch": 3}, tmp_path / "m.pt")
    tensors, meta = read_tensors(tmp_path / "m.pt")
    assert list(tensors) == ["x"] and meta == {}


@pytest.mark.parametrize("name,message", [("a.txt", "unknown checkpoint type"), ("missing.ckpt", "no such file")])
def test_bad_paths(tmp_path, name, message):
    if name.endswith(".txt"):
        (tmp_path / name).write_text("hi")
    with pytest.raises(CheckpointError, match=message):
        read_tensors(tmp_path / name)


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        read_tensors(tmp_path)

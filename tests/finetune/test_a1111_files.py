"""Finetune files against A1111's own loading rules: the ``.pt`` embeddings and hypernetworks we write pass its safe
unpickler (``modules/safe.py``, its rules written out below), embeddings stored in PNGs (``sd-ti-embedding``) read
from a file and from a folder, and the messages for refused and truncated pickles."""
from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import pickle
import re
import zipfile

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nanoldm.checkpoint.formats import CheckpointError, load_pickle
from nanoldm.finetune.embedding_files import Embedding, read_embedding, write_a1111_pt
from nanoldm.finetune.hypernetwork import Hypernetwork, HypernetworkOptions
from nanoldm.finetune.hypernetwork_file import load_hypernetwork, save_hypernetwork
from nanoldm.finetune.textual_inversion import load_embeddings_dir
from nanoldm.model import LatentDiffusion
from tests.conftest import TINY

# A1111 modules/safe.py: the globals RestrictedUnpickler.find_class allows, and the names a .pt zip may hold.
A1111_ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                 ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
                 *(("torch", n) for n in ("FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage",
                                          "ByteStorage", "float32", "BFloat16Storage")),
                 ("torch.nn.modules.container", "ParameterDict"), ("__builtin__", "set")}
A1111_ZIP_NAMES = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")


class A1111Unpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if (module, name) in A1111_ALLOWED:
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")


def a1111_check_pt(path) -> None:
    """A1111's ``check_pt``: a zip's entries must be data.pkl, version, data/N; a legacy file is 5 pickles."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = [n for n in z.namelist() if not A1111_ZIP_NAMES.match(n)]
            if bad:
                raise pickle.UnpicklingError(f"bad file inside {path}: {bad[0]}")
            with z.open(next(n for n in z.namelist() if n.endswith("/data.pkl"))) as f:
                A1111Unpickler(f).load()
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            unpickler = A1111Unpickler(f)
            for _ in range(5):
                unpickler.load()


def test_checker_refuses_what_a1111_refuses(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "zip.pt")  # torch 2.x's zip layout: .format_version, byteorder, ...
    with pytest.raises(pickle.UnpicklingError, match="bad file inside"):
        a1111_check_pt(tmp_path / "zip.pt")
    torch.save({"a": os.getcwd}, tmp_path / "call.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        a1111_check_pt(tmp_path / "call.pt")


def test_our_pt_files_pass_a1111s_safe_unpickler(tmp_path):
    embedding = Embedding("<star>", torch.randn(2, 32), step=100, sd_checkpoint="0123456789", sd_checkpoint_name="m")
    write_a1111_pt(embedding, tmp_path / "star.pt")
    a1111_check_pt(tmp_path / "star.pt")
    assert torch.equal(read_embedding(tmp_path / "star.pt").vectors, embedding.vectors)

    hn = Hypernetwork([32, 64], HypernetworkOptions(activation_func="relu", add_layer_norm=True), name="hn", step=3)
    save_hypernetwork(hn, tmp_path / "hn.pt")
    a1111_check_pt(tmp_path / "hn.pt")
    back = load_hypernetwork(tmp_path / "hn.pt")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), hn.state_dict().values()))


def write_png_embedding(path, name: str, vectors: torch.Tensor) -> None:
    """As A1111's "save images with embedding in PNG chunks": the .pt dict as base64 JSON in a text chunk."""
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": {"TORCHTENSOR": vectors.tolist()}},
            "name": name, "step": 500, "sd_checkpoint": "abc", "sd_checkpoint_name": "m"}
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(data).encode()).decode())
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


def test_png_embeddings_from_a_file_and_a_folder(tmp_path, tokenizer):
    vectors = torch.randn(3, 32)
    (tmp_path / "emb").mkdir()
    write_png_embedding(tmp_path / "emb" / "cat-500.png", "catstyle", vectors)
    Image.new("RGB", (8, 8)).save(tmp_path / "emb" / "catstyle.preview.png")  # an ordinary image: skipped
    got = read_embedding(tmp_path / "emb" / "cat-500.png")
    assert (got.name, got.step) == ("catstyle", 500)
    torch.testing.assert_close(got.vectors, vectors, rtol=0, atol=1e-7)
    model = LatentDiffusion.from_config(TINY, tokenizer=copy.deepcopy(tokenizer))  # the session's stays as it is
    assert load_embeddings_dir(model, tmp_path / "emb") == ["catstyle"]  # A1111 names a PNG's by its stored name
    with pytest.raises(CheckpointError, match="catstyle.preview.png: a PNG without an embedding"):
        read_embedding(tmp_path / "emb" / "catstyle.preview.png")


def test_refused_and_truncated_pickles_say_what_in_one_sentence(tmp_path):
    torch.save({"a": os.system}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil.pt: refused: its pickle asks to run code beyond plain tensors "
                                              r"\(it calls posix.system\), which weights-only loading never executes$"):
        load_pickle(tmp_path / "evil.pt")
    write_a1111_pt(Embedding("e", torch.randn(1, 32)), tmp_path / "e.pt")
    data = (tmp_path / "e.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        read_embedding(tmp_path / "cut.pt")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'cut.pt'}: truncated or corrupt embedding file (") and message.endswith(")")
    assert "\n" not in message and "The file might" not in message

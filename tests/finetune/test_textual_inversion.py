"""Textual-inversion embeddings: every file layout round-trips, A1111's own layout loads, hidden states match a
hand computation and diffusers' ``load_textual_inversion``, models keep their tokens, bad files are refused."""
import dataclasses
import os

import pytest
import torch

from nanoldm.checkpoint.formats import CheckpointError
from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.save import save_model
from nanoldm.cli.__main__ import main
from nanoldm.finetune.embedding_files import (Embedding, read_embedding, write_a1111_pt, write_a1111_safetensors,
                                              write_diffusers)
from nanoldm.finetune.textual_inversion import (apply_embedding, embedding_vectors, load_embeddings_dir,
                                                load_textual_inversion)
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.text.encode import encode_prompt
from tests.conftest import TINY

WIDTH = TINY.text.width
WRITERS = {"a1111.pt": write_a1111_pt, "a1111.safetensors": write_a1111_safetensors,
           "learned_embeds.safetensors": write_diffusers}


@pytest.fixture
def model(tokenizer):
    import copy

    torch.manual_seed(0)
    return LatentDiffusion.from_config(TINY, tokenizer=copy.deepcopy(tokenizer))


def hand_encode(model, base_table, prompt, token, vectors):
    """Hidden states of ``prompt`` with ``token``'s vectors spliced into the lookup by hand (BOS, ids, EOS, pad)."""
    tok, enc = model.tokenizer, model.text_encoder
    before, after = prompt.split(token)
    rows = [base_table[tok.bos_id]] + [base_table[i] for i in tok.encode(before)] + list(vectors) + \
        [base_table[i] for i in tok.encode(after)] + [base_table[tok.eos_id]]
    rows += [base_table[tok.pad_id]] * (77 - len(rows))
    x = torch.stack(rows)[None] + enc.embeddings.position_embedding.weight[None]  # (1, 77, width)
    for layer in enc.encoder.layers:
        x = layer(x)
    return enc.final_layer_norm(x)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_every_format_round_trips(tmp_path, kind, n):
    embedding = Embedding("<cat-toy>", torch.randn(n, WIDTH), step=1500, sd_checkpoint="a9263745",
                          sd_checkpoint_name="v1-5-pruned")
    path = tmp_path / kind
    WRITERS[kind](embedding, path)
    back = read_embedding(path)
    assert back.name == "<cat-toy>" and torch.equal(back.vectors, embedding.vectors)
    if kind.startswith("a1111"):
        assert (back.step, back.sd_checkpoint, back.sd_checkpoint_name) == (1500, "a9263745", "v1-5-pruned")
    if kind.endswith(".pt"):  # a plain dict of tensors, strings and ints: loads weights-only
        data = torch.load(path, weights_only=True)
        assert data["string_to_token"] == {"*": 265} and set(data["string_to_param"]) == {"*"}


def test_other_layouts_a1111_accepts(tmp_path):
    v = torch.randn(WIDTH)
    torch.save({"<x>": v}, tmp_path / "learned_embeds.bin")  # diffusers .bin, a single vector (width,)
    torch.save(v.reshape(1, -1), tmp_path / "bare.pt")
    torch.save({"emb_params": v.reshape(1, -1)}, tmp_path / "kohya.pt")
    assert read_embedding(tmp_path / "learned_embeds.bin").name == "<x>"
    assert read_embedding(tmp_path / "bare.pt").name == "bare" and read_embedding(tmp_path / "kohya.pt").name == "kohya"
    for name in ("learned_embeds.bin", "bare.pt", "kohya.pt"):
        assert torch.equal(read_embedding(tmp_path / name).vectors, v[None])
    legacy = torch.nn.ParameterDict({"*": torch.nn.Parameter(v[None].clone())})  # torch 1.11-era A1111 files
    torch.save({"string_to_param": legacy, "name": "old"}, tmp_path / "old.pt")
    assert torch.equal(read_embedding(tmp_path / "old.pt").vectors, v[None])


def test_hand_built_a1111_file_matches_hand_computed_hidden_states(model, tmp_path):
    vectors = torch.randn(2, WIDTH, requires_grad=True)  # A1111 saves its training tensor as is
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "my-style",
            "step": 1500, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "v1-5-pruned-emaonly"}
    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save(data, folder / "style-file.pt")
    (folder / "style-file.preview.png").write_bytes(b"not an embedding: ignored")
    base_table = model.text_encoder.embeddings.token_embedding.weight.detach().clone()
    assert load_embeddings_dir(model, folder) == ["style-file"]  # A1111: the file stem is the token
    prompt = "a house in style-file, at night"
    with torch.no_grad():
        ours = encode_prompt(model.text_encoder, model.tokenizer, prompt)
        expected = hand_encode(model, base_table, prompt, "style-file", vectors.detach())
    assert torch.allclose(ours, expected, atol=1e-6)
    assert load_textual_inversion(model, folder / "style-file.pt") == "my-style"  # alone: the stored name


def test_a_folder_of_our_trainer_files_defines_the_bracketed_tokens(model, tmp_path, capsys):
    """``train embedding --token "<star>"`` writes star.pt, star.safetensors and learned_embeds.safetensors: in
    a folder they all mean "<star>" (not the word "star", which may be in the vocabulary already), added once;
    a renamed file means its new stem; the same token with other vectors is an error."""
    from nanoldm.finetune.embedding_files import Embedding, write_a1111_pt, write_a1111_safetensors
    from nanoldm.finetune.textual_inversion import load_embeddings

    folder = tmp_path / "embeddings"
    folder.mkdir()
    vectors = torch.randn(1, WIDTH)
    for write, name in ((write_a1111_pt, "star.pt"), (write_a1111_safetensors, "star.safetensors"),
                        (write_diffusers, "learned_embeds.safetensors"),
                        (write_a1111_safetensors, "my-star.safetensors")):
        write(Embedding("<star>", vectors), folder / name)
    assert load_embeddings(model, folder) == ["<star>", "my-star"]
    assert torch.equal(embedding_vectors(model, "<star>"), vectors)
    assert load_embeddings(model, folder / "star.pt") == ["<star>"]  # one file: its stored name
    save_model(model, tmp_path / "m.safetensors")
    write_a1111_safetensors(Embedding("<star>", torch.randn(1, WIDTH)), folder / "star.safetensors")
    with pytest.raises(CheckpointError, match="'<star>' again, with other vectors"):
        load_embeddings(model, folder)
    assert main(["txt2img", "a red <star>", "--model", str(tmp_path / "m.safetensors"), "--steps", "1",
                 "--embeddings", str(folder / "star.pt"), "--out", str(tmp_path / "out")]) == 0
    assert "embeddings: <star>" in capsys.readouterr().err


@pytest.mark.parametrize("n", [1, 3])
def test_parity_with_diffusers_load_textual_inversion(tmp_path, n):
    from tests.reference import write_reference_folder

    pipe = write_reference_folder(TINY, tmp_path / "ref")
    ours = load_model(tmp_path / "ref")
    path = tmp_path / "learned_embeds.safetensors"
    write_diffusers(Embedding("<cat-toy>", torch.randn(n, WIDTH)), path)
    pipe.load_textual_inversion(str(path), token="<cat-toy>")
    load_textual_inversion(ours, path)
    prompt = "a <cat-toy> sitting on a red chair"
    with torch.no_grad():
        reference, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
        mine = encode_prompt(ours.text_encoder, ours.tokenizer, prompt)
    converted = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    assert ours.tokenizer(prompt)[0].tolist() == pipe.tokenizer(converted, padding="max_length")["input_ids"]
    assert (mine - reference).abs().max().item() <= 1e-5


def test_diffusers_reads_our_a1111_pt(tmp_path):
    from tests.reference import write_reference_folder

    pipe = write_reference_folder(TINY, tmp_path / "ref")
    vectors = torch.randn(2, WIDTH)
    write_a1111_pt(Embedding("<blob>", vectors), tmp_path / "blob.pt")
    pipe.load_textual_inversion(str(tmp_path / "blob.pt"))  # the token is the stored name
    ids = pipe.tokenizer.convert_tokens_to_ids(["<blob>", "<blob>_1"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), vectors)


def test_multi_vector_model_saves_and_loads_back(model, tmp_path):
    apply_embedding(model, torch.randn(3, WIDTH), "<a>")
    apply_embedding(model, torch.randn(1, WIDTH), "<b>")
    assert model.tokenizer.encode("x <a> <b>") == [343, 49408, 49409, 49410, 49411]
    assert model.config.text.vocab_size == 49412
    prompt = "a <a> next to a <b>"
    with torch.no_grad():
        expected = encode_prompt(model.text_encoder, model.tokenizer, prompt)
        for fmt, path in (("nanoldm", tmp_path / "m.safetensors"), ("diffusers", tmp_path / "m")):
            save_model(model, path, format=fmt)
            back = load_model(path)
            assert back.tokenizer.encode(prompt) == model.tokenizer.encode(prompt)
            assert torch.equal(encode_prompt(back.text_encoder, back.tokenizer, prompt), expected)


def test_loading_a_token_again_replaces_it(model):
    a1, b, a2, a3 = torch.randn(2, WIDTH), torch.randn(1, WIDTH), torch.randn(2, WIDTH), torch.randn(4, WIDTH)
    ids = apply_embedding(model, a1, "<a>")
    apply_embedding(model, b, "<b>")
    assert apply_embedding(model, a2, "<a>") == ids and model.config.text.vocab_size == 49411  # same N: in place
    assert torch.equal(embedding_vectors(model, "<a>"), a2)
    apply_embedding(model, a3, "<a>")  # another N: old rows dropped, <b> moves down, <a> appended
    assert model.tokenizer.added_tokens == ["<b>", "<a>", "<a>_1", "<a>_2", "<a>_3"]
    assert model.config.text.vocab_size == model.text_encoder.cfg.vocab_size == 49413
    assert torch.equal(embedding_vectors(model, "<a>"), a3) and torch.equal(embedding_vectors(model, "<b>"), b)
    assert model.tokenizer.encode("<a><b>") == [49409, 49410, 49411, 49412, 49408]


def test_pipeline_and_cli_load_embeddings(model, tmp_path):
    write_a1111_safetensors(Embedding("anything", torch.randn(2, WIDTH)), tmp_path / "emb" / "shiny.safetensors")
    pipe = Pipeline(dataclasses.replace(model, config=dataclasses.replace(model.config, image_size=16)))
    assert pipe.load_textual_inversion(tmp_path / "emb" / "shiny.safetensors", token="<shiny>") == "<shiny>"
    assert len(pipe.tokenizer.encode("<shiny>")) == 2
    save_model(pipe.model, tmp_path / "m.safetensors")
    args = ["txt2img", "a shiny circle", "--model", str(tmp_path / "m.safetensors"), "--steps", "2",
            "--seed", "1", "--device", "cpu", "--out", str(tmp_path / "out"), "--embeddings", str(tmp_path / "emb")]
    assert main(args) == 0 and len(list((tmp_path / "out").glob("*.png"))) == 1


def test_the_infotext_records_the_embeddings_a_prompt_uses_as_a1111_does(model, tmp_path):
    """A1111's ``TI hashes: "name: hash"``: 12 hex digits of the file's SHA-256, for the embeddings the prompt or
    the negative prompt uses (others, and embeddings not read from a file, are left out)."""
    import hashlib

    pipe = Pipeline(dataclasses.replace(model, config=dataclasses.replace(model.config, image_size=16)))
    paths = {}
    for name in ("shiny", "dull"):
        paths[name] = tmp_path / f"{name}.safetensors"
        write_a1111_safetensors(Embedding(name, torch.randn(1, WIDTH)), paths[name])
        pipe.load_textual_inversion(paths[name])
    apply_embedding(pipe.model, torch.randn(1, WIDTH), "trained")  # in memory: no file, no hash
    short = {k: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for k, p in paths.items()}

    def infotext(prompt, negative=""):
        return pipe.txt2img(prompt, negative, steps=1, seed=1, progress=False)[0].info["parameters"]

    assert f'TI hashes: "shiny: {short["shiny"]}"' in infotext("a shiny circle trained")
    assert f'TI hashes: "shiny: {short["shiny"]}, dull: {short["dull"]}"' in infotext("a (dull:1.2) circle", "shiny")
    assert "TI hashes" not in infotext("a trained circle")


def test_malicious_pickle_is_refused_and_never_run(model, tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    folder = tmp_path / "emb"
    folder.mkdir()
    torch.save({"string_to_param": {"*": Evil()}, "name": "evil"}, folder / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        read_embedding(folder / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_embeddings_dir(model, folder)
    save_model(model, tmp_path / "m.safetensors")
    assert main(["txt2img", "x", "--model", str(tmp_path / "m.safetensors"), "--embeddings", str(folder),
                 "--out", str(tmp_path / "out")]) == 2
    assert "evil.pt" in capsys.readouterr().err
    assert not marker.exists() and model.tokenizer.added_tokens == []


def test_wrong_width_and_bad_files_are_clear_errors(model, tmp_path):
    write_diffusers(Embedding("<wide>", torch.randn(1, 48)), tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="48 wide.*32"):
        load_textual_inversion(model, tmp_path / "wide.safetensors")
    folder = tmp_path / "emb"
    write_diffusers(Embedding("<ok>", torch.randn(1, WIDTH)), folder / "ok.safetensors")
    write_diffusers(Embedding("<wide>", torch.randn(1, 48)), folder / "wide.safetensors")
    (folder / "broken.pt").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(CheckpointError, match="2 of 3") as error:
        load_embeddings_dir(model, folder)
    assert "broken.pt" in str(error.value) and "48" in str(error.value) and "ok" not in model.tokenizer.added_tokens
    torch.save({"a": torch.randn(WIDTH), "b": torch.randn(WIDTH)}, tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="found 2 tensors"):
        read_embedding(tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        read_embedding(tmp_path / "missing.pt")


def test_a_server_skips_and_lists_what_it_cannot_use_as_a1111_does(model, tmp_path):
    """Strict (the commands): one error naming every unusable file, nothing added. With a ``skipped`` dict (the
    server): the usable ones load, each other one is a warning and an entry of the dict."""
    folder = tmp_path / "emb"
    write_diffusers(Embedding("<ok>", torch.randn(1, WIDTH)), folder / "ok.safetensors")
    write_diffusers(Embedding("<wide>", torch.randn(2, 48)), folder / "wide.safetensors")
    write_a1111_safetensors(Embedding("star", torch.randn(1, WIDTH)), folder / "star.safetensors")
    (folder / "broken.pt").write_bytes(b"\x80\x02 truncated")
    with pytest.raises(CheckpointError, match="3 of 4.*'star' is already a word of the vocabulary"):
        load_embeddings_dir(model, folder)
    assert model.tokenizer.added_tokens == []
    skipped = {}
    with pytest.warns(UserWarning, match="embedding skipped") as caught:
        tokens = load_embeddings_dir(model, folder, skipped)
    assert tokens == ["<ok>"] and model.tokenizer.added_tokens == ["<ok>"] and len(caught) == 3
    assert set(skipped) == {"<wide>", "star", "broken.pt"} and skipped["broken.pt"] is None
    assert skipped["<wide>"].vectors.shape == (2, 48)

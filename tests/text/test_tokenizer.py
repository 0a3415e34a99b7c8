"""CLIP tokenizer: golden ids, parity with transformers on 1,200 generated prompts, added tokens, errors."""

import gzip
import json
import random

import pytest
import torch

from nanoldm.text import tokenizer as tokenizer_module
from nanoldm.text.tokenizer import CLIPTokenizer, TokenizerError

import transformers  # noqa: E402  (test-only reference)

WORDS = "a photo of the cat dog astronaut riding horse on mars painting portrait city night sky forest".split()
SD_TAGS = ["masterpiece", "best quality", "8k", "trending on artstation", "highly detailed", "octane render"]
SCRIPTS = [
    "àáâãäåçèéêëìíîïñòóôõöùúûüýÿßøæœ",  # Latin with accents
    "ΑΒΓΔΕΖΗΘαβγδεζηθλμνξοπρστυφχψωΣς",  # Greek
    "АБВГДЕЖЗИЙКабвгдежзийклмнопрстуфх",  # Cyrillic
    "東京猫犬写真山川日本語中文字",  # CJK
    "ひらがなカタカナ",  # kana
    "مرحباالعالم",  # Arabic
    "שלוםעולם",  # Hebrew
    "नमस्तेदुनिया",  # Devanagari (with combining signs)
    "สวัสดีชาวโลก",  # Thai
    "안녕하세요세계",  # Hangul
]
EMOJI = ["😀", "🐱", "🚀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "✨"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["...", "--", "!!", "«", "»", "“", "”", "…", "•"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\r\n", " \t\n ", "\u00a0", "\u3000", "\u2009", "\x0b\x0c", "\x85", "\u2028"]
CONTROLS = ["\x00", "\x1c", "\x1f", "\u200b", "\u200d", "\ufeff", "\x7f"]  # not whitespace to tokenizers
SPECIAL = [
    "(cat:1.2)", "((dog))", "[blurry]", "{castle}", "horse::2", "(masterpiece:1.4)", "&amp;", "&lt;b&gt;",
    "&#39;", "&quot;", "don't", "IT'S", "we're", "they'll", "I'd", "you've", "I'm", "<|endoftext|>",
    "<|startoftext|>", "e\u0301", "A\u030a", "ΟΔΟΣ", "İstanbul", "3.14", "1024x768", "f/1.8", "--ar 16:9",
]


def _random_piece(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        word = rng.choice(WORDS)
        return rng.choice([word, word.upper(), word.title(), "".join(rng.choice([c, c.upper()]) for c in word)])
    if kind == 1:
        return rng.choice(SD_TAGS)
    if kind == 2:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3)))
    if kind == 3:
        return str(rng.randint(0, 10**rng.randint(1, 6)))
    if kind == 4:
        script = rng.choice(SCRIPTS)
        return "".join(rng.choice(script) for _ in range(rng.randint(1, 6)))
    if kind == 5:
        return rng.choice(EMOJI) if rng.random() < 0.8 else rng.choice(CONTROLS)
    if kind == 6:
        return rng.choice(SPECIAL)
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz'") for _ in range(rng.randint(1, 12)))


def _random_prompt(rng: random.Random) -> str:
    n = rng.choice([0, 1, 2, 5, 10, 20, 90]) + rng.randint(0, 3)  # 90+: well over 77 tokens
    out = []
    for _ in range(n):
        out.append(_random_piece(rng))
        out.append(rng.choice(SPACES) if rng.random() < 0.4 else rng.choice([" ", ", ", "", " "]))
    return "".join(out)


PROMPTS = ["", " ", "\t\n", "a photo of a cat"] + [_random_prompt(random.Random(seed)) for seed in range(1200)]


@pytest.fixture(scope="module")
def ours() -> CLIPTokenizer:
    return CLIPTokenizer.default()


@pytest.fixture(scope="module")
def folder(ours, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    ours.save_folder(path)
    return path


@pytest.fixture(scope="module")
def reference(folder):
    ref = transformers.CLIPTokenizer.from_pretrained(folder)
    assert len(ref) == ref.vocab_size == 49408  # guards against transformers building a 3-token vocab
    return ref


def test_golden_ids(ours):
    ids = ours("a photo of a cat")
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[0, 7:] == 49407).all()
    assert ours.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert (ours.bos_id, ours.eos_id, ours.pad_id, ours.vocab_size) == (49406, 49407, 49407, 49408)
    assert ours.token_to_id("cat</w>") == 2368 and ours.token_to_id("<nope>") is None


def test_prompts_are_varied():
    assert len(set(PROMPTS)) > 1000
    assert sum(len(p) > 400 for p in PROMPTS) > 50


def test_encode_matches_transformers(ours, reference):
    expected = reference(PROMPTS, add_special_tokens=False)["input_ids"]
    for prompt, ids in zip(PROMPTS, expected):
        assert ours.encode(prompt) == ids, repr(prompt)


def test_padded_batch_matches_transformers(ours, reference):
    expected = reference(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    got = ours(PROMPTS)
    assert got.shape == (len(PROMPTS), 77)
    assert torch.equal(got, expected["input_ids"])
    assert (got[:, -1] == ours.eos_id).all()  # long prompts were truncated, EOS kept


def test_from_folder_matches_bpe_file(ours, folder):
    loaded = CLIPTokenizer.from_folder(folder)
    assert loaded.vocab_size == ours.vocab_size
    assert torch.equal(loaded(PROMPTS[:300]), ours(PROMPTS[:300]))


def test_decode(ours, reference):
    text = "A Photo of  a CAT, (wearing:1.2) a hat! 東京 😀"
    assert ours.decode(ours.encode(text)) == "a photo of a cat , ( wearing : 1 . 2 ) a hat ! 東京 😀"
    assert ours.decode(ours("a cat")[0]) == "a cat"
    for prompt in PROMPTS[:200]:
        ids = ours.encode(prompt)
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True), repr(prompt)


def test_added_tokens_match_transformers(ours, folder, tmp_path):
    tok = CLIPTokenizer.from_folder(folder)
    ref = transformers.CLIPTokenizer.from_pretrained(folder)
    assert tok.add_tokens(["<star>", "<Moon>"]) == [49408, 49409]
    assert ref.add_tokens(["<star>", "<Moon>"]) == 2
    assert tok.vocab_size == 49410 and tok.token_to_id("<star>") == 49408
    assert tok.encode("a <star> shape") == [320, 49408, 6448]
    prompts = ["a <star> shape", "<star><star>", "x<STAR>y <moon>, <Moon>!", *PROMPTS[:100]]
    for prompt in prompts:
        assert tok.encode(prompt) == ref(prompt, add_special_tokens=False)["input_ids"], prompt
    assert tok.decode(tok.encode("a <star> shape")) == ref.decode([320, 49408, 6448]) == "a <star>shape"

    tok.save_folder(tmp_path)
    again = CLIPTokenizer.from_folder(tmp_path)
    assert again.vocab_size == 49410 and again.encode("a <star> <moon>") == [320, 49408, 49409]
    ref_again = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    assert ref_again("a <star> <moon>", add_special_tokens=False)["input_ids"] == [320, 49408, 49409]


def test_adding_existing_token_is_an_error(ours):
    tok = CLIPTokenizer.default()
    tok.add_tokens(["<star>"])
    for token in ["<star>", "cat</w>", "<|endoftext|>"]:
        with pytest.raises(TokenizerError, match="already in the vocabulary"):
            tok.add_tokens([token])
    with pytest.raises(TokenizerError, match="same text"):
        tok.add_tokens(["<STAR>"])
    with pytest.raises(TokenizerError, match="'<moon>'"):
        tok.add_tokens(["<sun>", "<moon>", "<moon>"])
    assert tok.vocab_size == 49409 and tok.token_to_id("<sun>") is None  # all or nothing


def test_missing_folder(tmp_path):
    with pytest.raises(TokenizerError, match="not found") as error:
        CLIPTokenizer.from_folder(tmp_path / "nowhere")
    assert "nowhere" in str(error.value)


def test_folder_without_merges(folder, tmp_path):
    (tmp_path / "vocab.json").write_bytes((folder / "vocab.json").read_bytes())
    with pytest.raises(TokenizerError, match="no merges.txt") as error:
        CLIPTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_folder_saved_by_transformers_5_reads_tokenizer_json(ours, reference, tmp_path):
    """transformers 5 writes only tokenizer.json; its BPE model and added tokens are read from there."""
    reference = transformers.CLIPTokenizer.from_pretrained(reference.name_or_path)
    reference.add_tokens(["<star>"])
    reference.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    loaded = CLIPTokenizer.from_folder(tmp_path)
    assert loaded.vocab_size == 49409 and loaded.token_to_id("<star>") == 49408
    prompt = "a <star> at the TOP left, 1girl (masterpiece:1.2)"
    assert loaded.encode(prompt) == reference(prompt, add_special_tokens=False)["input_ids"]
    assert loaded.encode("a photo of a cat") == ours.encode("a photo of a cat")


def test_folder_without_vocab(folder, tmp_path):
    (tmp_path / "merges.txt").write_bytes((folder / "merges.txt").read_bytes())
    with pytest.raises(TokenizerError, match="no vocab.json"):
        CLIPTokenizer.from_folder(tmp_path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("vocab.json", '{"a": 1, "b": ', "corrupt vocab.json"),
        ("vocab.json", '["a", "b"]', "corrupt vocab.json"),
        ("vocab.json", '{"a": 1}', "not in the vocabulary"),
        ("merges.txt", "#version: 0.2\ni n\nthis is garbage\n", "line 3 is not a merge"),
        ("tokenizer_config.json", "{oops", "corrupt tokenizer_config.json"),
    ],
)
def test_corrupt_files(folder, tmp_path, name, content, message):
    for file in ("vocab.json", "merges.txt"):
        (tmp_path / file).write_bytes((folder / file).read_bytes())
    (tmp_path / name).write_text(content, encoding="utf-8")
    with pytest.raises(TokenizerError, match=message) as error:
        CLIPTokenizer.from_folder(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_bad_bpe_gz(tmp_path, monkeypatch):
    with pytest.raises(TokenizerError, match="not found"):
        CLIPTokenizer.from_bpe_file(tmp_path / "missing.txt.gz")
    (tmp_path / "garbled.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TokenizerError, match="not a readable gzip"):
        CLIPTokenizer.from_bpe_file(tmp_path / "garbled.gz")
    with gzip.open(tmp_path / "short.gz", "wt") as f:
        f.write("header\ni n\n")
    with pytest.raises(TokenizerError, match="holds 2 merges"):
        CLIPTokenizer.from_bpe_file(tmp_path / "short.gz")
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenizerError, match="open_clip"):
        CLIPTokenizer.default()


def test_over_long_prompt(ours):
    prompt = "cat " * 80
    with pytest.raises(TokenizerError, match="prompt 1 is 80 tokens, limit 75"):
        ours(["a dog", prompt], truncate=False)
    ids = ours(prompt)
    assert ids[0, 1:76].eq(2368).all() and ids[0, 76] == ours.eos_id
    assert ours(prompt, max_length=100, truncate=False)[0, 81] == ours.eos_id


def test_added_tokens_json_written(ours, tmp_path):
    tok = CLIPTokenizer.default()
    tok.add_tokens(["<star>"])
    tok.save_folder(tmp_path)
    assert json.loads((tmp_path / "added_tokens.json").read_text()) == {"<star>": 49408}
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 77 and config["pad_token"] == "<|endoftext|>"

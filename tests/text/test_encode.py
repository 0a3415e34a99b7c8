"""Prompt encoding as A1111 does it: 75-token chunks, BREAK, comma backtrack, weights with the mean restored,
cond/uncond padding; and exactly the plain encoder call for short unweighted prompts."""
import pytest
import torch

from nanoldm.text.clip import CLIPTextEncoder
from nanoldm.text.encode import (
    CHUNK_TOKENS,
    chunk_prompt,
    empty_chunk,
    encode_chunks,
    encode_prompt,
    encode_prompt_pair,
    encode_prompts,
)
from nanoldm.text.tokenizer import CLIPTokenizer
from tests.conftest import TINY_TEXT

W = TINY_TEXT.width


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer.default()


@pytest.fixture
def encoder():
    return CLIPTextEncoder(TINY_TEXT).eval()


def ids_of(tokenizer, word):
    (token,) = tokenizer.encode(word)
    return token


def prompt_tokens(chunk):
    """The prompt tokens of a chunk: between BOS and the first EOS."""
    ids = chunk.ids[1:-1]
    return ids[: ids.index(chunk.ids[-1])] if chunk.ids[-1] in ids else ids


# ---- chunking ----

def test_chunk_layout(tokenizer):
    (chunk,) = chunk_prompt(tokenizer, "a (cat:1.5) dog")
    a, cat, dog = (ids_of(tokenizer, w) for w in ("a", "cat", "dog"))
    eos = tokenizer.eos_id
    assert chunk.ids == [tokenizer.bos_id, a, cat, dog] + [eos] * 72 + [eos]
    assert chunk.weights == [1.0, 1.0, 1.5, 1.0] + [1.0] * 73


def test_200_tokens_make_three_chunks(tokenizer):
    chunks = chunk_prompt(tokenizer, "cat " * 200)
    assert [len(prompt_tokens(c)) for c in chunks] == [75, 75, 50]
    assert all(len(c.ids) == len(c.weights) == CHUNK_TOKENS + 2 for c in chunks)


def test_exactly_75_tokens_is_one_chunk(tokenizer):
    assert len(chunk_prompt(tokenizer, "cat " * 75)) == 1
    assert len(chunk_prompt(tokenizer, "cat " * 76)) == 2


def test_break_forces_a_new_chunk(tokenizer):
    chunks = chunk_prompt(tokenizer, "a cat BREAK a dog")
    assert [prompt_tokens(c) for c in chunks] == [tokenizer.encode("a cat"), tokenizer.encode("a dog")]
    assert len(chunk_prompt(tokenizer, "a cat BREAK")) == 1  # nothing after it: no empty chunk
    assert len(chunk_prompt(tokenizer, "BREAK a cat")) == 2  # A1111 emits the (empty) first chunk


def test_comma_backtrack_moves_the_words_after_a_near_comma(tokenizer):
    cat, dog, comma = (ids_of(tokenizer, w) for w in ("cat", "dog", ","))
    chunks = chunk_prompt(tokenizer, "cat " * 70 + ", " + "dog " * 10)  # 81 tokens; comma 5 from the end
    assert [prompt_tokens(c) for c in chunks] == [[cat] * 70 + [comma], [dog] * 10]


def test_comma_backtrack_ignores_a_far_comma(tokenizer):
    cat, dog, comma = (ids_of(tokenizer, w) for w in ("cat", "dog", ","))
    chunks = chunk_prompt(tokenizer, "cat " * 50 + ", " + "dog " * 30)  # comma 25 from the end: > 20
    assert [prompt_tokens(c) for c in chunks] == [[cat] * 50 + [comma] + [dog] * 24, [dog] * 6]
    off = chunk_prompt(tokenizer, "cat " * 70 + ", " + "dog " * 10, comma_backtrack=0)
    assert [len(prompt_tokens(c)) for c in off] == [75, 6]


def test_backtrack_keeps_weights_with_their_tokens(tokenizer):
    chunks = chunk_prompt(tokenizer, "cat " * 70 + ", " + "(dog:1.4) " * 10)
    assert chunks[1].weights[1:11] == [1.4] * 10
    assert chunks[0].weights[72:] == [1.0] * 5  # padding after the comma, then EOS


# ---- encoding ----

def test_short_unweighted_prompt_is_exactly_the_plain_encoder_call(tokenizer, encoder):
    for prompt in ("a photo of a cat riding a horse", "", "cat " * 75):
        with torch.no_grad():
            assert torch.equal(encode_prompt(encoder, tokenizer, prompt), encoder(tokenizer(prompt)))
            assert torch.equal(encode_prompt(encoder, tokenizer, prompt, clip_skip=2),
                               encoder(tokenizer(prompt), clip_skip=2))


def test_empty_prompt_is_one_chunk(tokenizer, encoder):
    with torch.no_grad():
        z = encode_prompt(encoder, tokenizer, "")
        assert z.shape == (1, 77, W)
        assert torch.equal(z, encode_chunks(encoder, [[empty_chunk(tokenizer)]]))


def test_long_prompt_is_chunks_encoded_separately(tokenizer, encoder):
    with torch.no_grad():
        z = encode_prompt(encoder, tokenizer, "cat " * 200)
        assert z.shape == (1, 231, W)
        assert torch.equal(z[:, :77], encoder(tokenizer("cat " * 75)))
        assert torch.allclose(z[:, 154:], encoder(tokenizer("cat " * 50)))


def test_break_chunks_encode_each_part_alone(tokenizer, encoder):
    with torch.no_grad():
        z = encode_prompt(encoder, tokenizer, "a red cat BREAK a blue dog")
        assert z.shape == (1, 154, W)
        assert torch.allclose(z[:, :77], encoder(tokenizer("a red cat")))
        assert torch.allclose(z[:, 77:], encoder(tokenizer("a blue dog")))


def test_weights_applied_and_mean_restored(tokenizer, encoder):
    with torch.no_grad():
        z = encoder(tokenizer("a cat dog"))  # (1, 77, W)
        weighted = encode_prompt(encoder, tokenizer, "a (cat:1.5) [dog]")
    w = torch.ones(77)
    w[2], w[3] = 1.5, 1 / 1.1  # BOS, a, cat, dog, ...
    ratio = z.mean() / (z * w[None, :, None]).mean()
    expected = z * w[None, :, None] * ratio
    assert torch.allclose(weighted, expected, atol=1e-6)
    assert torch.allclose(weighted.mean(), z.mean(), atol=1e-6)
    # token by token: each hidden state scaled by its weight, then all by one ratio
    assert torch.allclose(weighted[0, 2], z[0, 2] * 1.5 * ratio, atol=1e-6)
    assert torch.allclose(weighted[0, 1], z[0, 1] * ratio, atol=1e-6)


def test_pair_pads_the_shorter_with_empty_chunks(tokenizer, encoder):
    with torch.no_grad():
        cond, uncond = encode_prompt_pair(encoder, tokenizer, "cat " * 200, "blurry")
        empty = encode_prompt(encoder, tokenizer, "")
        assert cond.shape == uncond.shape == (1, 231, W)
        assert torch.equal(cond, encode_prompt(encoder, tokenizer, "cat " * 200))
        assert torch.equal(uncond[:, :77], encode_prompt(encoder, tokenizer, "blurry"))
        assert torch.equal(uncond[:, 77:154], empty) and torch.equal(uncond[:, 154:], empty)
        cond, uncond = encode_prompt_pair(encoder, tokenizer, "cat", "dog BREAK blurry")  # the other way round
        assert cond.shape == uncond.shape == (1, 154, W) and torch.equal(cond[:, 77:], empty)


def test_short_pair_is_two_plain_encoder_calls(tokenizer, encoder):
    with torch.no_grad():
        cond, uncond = encode_prompt_pair(encoder, tokenizer, "a cat", "")
        assert torch.equal(cond, encoder(tokenizer("a cat"))) and torch.equal(uncond, encoder(tokenizer("")))


def test_batches_pad_to_the_longest(tokenizer, encoder):
    prompts = ["a cat", "dog " * 100]
    with torch.no_grad():
        z = encode_prompts(encoder, tokenizer, prompts)
        assert z.shape == (2, 154, W)
        assert torch.allclose(z[0, 77:], encode_prompt(encoder, tokenizer, "")[0], atol=1e-6)
        assert torch.allclose(z[1], encode_prompt(encoder, tokenizer, prompts[1])[0], atol=1e-6)
        short = ["a cat", "a dog"]
        assert torch.equal(encode_prompts(encoder, tokenizer, short), encoder(tokenizer(short)))
        cond, uncond = encode_prompt_pair(encoder, tokenizer, prompts, ["", "blurry"])
        assert cond.shape == uncond.shape == (2, 154, W)
    with pytest.raises(ValueError, match="negative prompts"):
        encode_prompt_pair(encoder, tokenizer, prompts, "blurry")


def test_zero_mean_hidden_states_do_not_make_nan():
    """A chunk whose hidden states average to exactly 0 (possible for a fresh final LayerNorm) stays finite."""
    from nanoldm.text.encode import _apply_weights

    z = torch.tensor([[[1.0, -1.0], [2.0, -2.0]]])
    assert torch.equal(_apply_weights(z, torch.ones(1, 2)), z)
    out = _apply_weights(z, torch.tensor([[1.0, 1.5]]))
    assert torch.isfinite(out).all()


def test_comfyui_emphasis_moves_weighted_tokens_away_from_the_empty_prompt(tokenizer, encoder):
    """ComfyUI (``encode_token_weights``): z' = (z - z_empty) * w + z_empty at weighted positions, the rest as it
    is, no mean restored; an unweighted prompt is the plain encoder call."""
    with torch.no_grad():
        z = encoder(tokenizer("a cat dog"))
        z_empty = encoder(tokenizer(""))
        cond, _ = encode_prompt_pair(encoder, tokenizer, "a (cat:1.5) dog", "", emphasis="comfyui")
        plain, _ = encode_prompt_pair(encoder, tokenizer, "a cat dog", "", emphasis="comfyui")
    assert torch.equal(plain, z)
    expected = z.clone()
    expected[0, 2] = (z[0, 2] - z_empty[0, 2]) * 1.5 + z_empty[0, 2]
    assert torch.allclose(cond, expected, atol=1e-6) and torch.equal(cond[0, 3], z[0, 3])
    with pytest.raises(ValueError, match="unknown emphasis 'loud'"):
        encode_prompt_pair(encoder, tokenizer, "a", "", emphasis="loud")

"""ComfyUI's prompt syntax and chunking (``like="comfyui"``) against its parser restated from its source
(``comfyui_prompt_reference``): the same pieces and weights, the same chunks of ids and weights."""
import pytest
import torch

from nanoldm.text.encode import chunk_prompt, chunk_prompt_comfyui, encode_prompt_pair
from nanoldm.text.prompt_comfyui import parse_comfyui_weights
from tests.text import comfyui_prompt_reference as ref

PROMPTS = [
    "a red circle", "", "a (red) circle", "((a)) b", "a (red (circle:1.5)) [x]", "(a:b)", "(a:1.2:3)", "a (b",
    "x) y (z)", r"a \(b\) (c)", r"a \[b] \\ (c\)", "(a (b:0.5) c:1.2)", "BREAK me", "(:1.5)", "((x:2):0.5)",
    "a (red circle:0.8), (blue:1.3) square (at the (top:1.4)) left", "(nested (deeper (deepest)))",
]
LONG = [
    "a red circle, " * 30,  # short pieces: many chunks
    "(" + "a big blue square " * 25 + ":1.2)",  # one long weighted piece: split where the chunk is full
    "word " * 73 + "(a pair of short:1.3) tail",  # a short piece that does not fit moves whole
    "word " * 73 + "(" + "x " * 9 + ":1.1)",  # a long piece that does not fit is split
]


def _reference_chunks(tokenizer, prompt):
    return ref.tokenize_with_weights(tokenizer.encode, prompt, tokenizer.bos_id, tokenizer.eos_id)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_pieces_and_weights_are_comfyuis(prompt):
    expected = [(ref.unescape_important(t), w) for t, w in ref.token_weights(ref.escape_important(prompt), 1.0)]
    assert parse_comfyui_weights(prompt) == expected


@pytest.mark.parametrize("prompt", PROMPTS + LONG)
def test_chunks_are_comfyuis(tokenizer, prompt):
    got = [list(zip(c.ids, c.weights)) for c in chunk_prompt_comfyui(tokenizer, prompt)]
    assert got == _reference_chunks(tokenizer, prompt)
    assert all(len(c) == 77 for c in got)


def test_where_comfyui_reads_a_prompt_unlike_a1111(tokenizer):
    """An explicit weight replaces the outer ones, [x] is text, BREAK a word, and long prompts chunk otherwise."""
    def weights(chunks):
        return [w for c in chunks for w in c.weights]

    for prompt in ["((a:1.5))", "a [b] c", "a BREAK b", LONG[2]]:
        assert weights(chunk_prompt_comfyui(tokenizer, prompt)) != weights(chunk_prompt(tokenizer, prompt)) or \
            [c.ids for c in chunk_prompt_comfyui(tokenizer, prompt)] != [c.ids for c in chunk_prompt(tokenizer, prompt)]
    assert weights(chunk_prompt_comfyui(tokenizer, "((a:1.5))"))[1] == 1.5
    assert weights(chunk_prompt(tokenizer, "((a:1.5))"))[1] == pytest.approx(1.5 * 1.1)


def test_comfyui_conventions_encode_with_its_parser(tokenizer):
    from nanoldm.text.clip import CLIPTextEncoder
    from tests.conftest import TINY_TEXT

    torch.manual_seed(0)
    encoder = CLIPTextEncoder(TINY_TEXT).eval()
    with torch.no_grad():
        cond, _ = encode_prompt_pair(encoder, tokenizer, "((a:1.5)) [b]", "", emphasis="comfyui")
        z = encoder(torch.tensor([c.ids for c in chunk_prompt_comfyui(tokenizer, "((a:1.5)) [b]")]))
        z_empty = encoder(tokenizer(""))
    expected = z.clone()
    expected[0, 1] = (z[0, 1] - z_empty[0, 1]) * 1.5 + z_empty[0, 1]
    assert torch.allclose(cond, expected, atol=1e-6)

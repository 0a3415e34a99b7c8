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


EMBEDDING_PROMPTS = [
    "a photo of embedding:easyneg", "embedding:easyneg, in a field",
    "a (embedding:easyneg:1.3) and embedding:badhandv4.pt here", "embedding:easyneg.safetensors", "a easyneg",
    "x\nembedding:badhandv4", "a embedding:unknown thing", "glued embedding:easyneg", "noembedding:easyneg",
    "(a embedding:easyneg,, b:0.8)", "embedding:,easyneg, c",
]


@pytest.fixture(scope="module")
def with_embeddings():
    from nanoldm.text.tokenizer import CLIPTokenizer

    tokenizer = CLIPTokenizer.default()
    tokenizer.add_tokens(["easyneg", "easyneg_1", "badhandv4"])  # "easyneg" has two vectors
    vectors = {"easyneg": [tokenizer.token_to_id("easyneg"), tokenizer.token_to_id("easyneg_1")],
               "badhandv4": [tokenizer.token_to_id("badhandv4")]}
    # nanoldm keeps no file extension: a name with any of ComfyUI's finds the embedding of that name
    files = {name + ext: ids for name, ids in vectors.items() for ext in ("", ".safetensors", ".pt", ".bin")}
    return tokenizer, files


@pytest.mark.parametrize("prompt", EMBEDDING_PROMPTS)
def test_embedding_syntax_is_comfyuis(with_embeddings, prompt):
    """``embedding:name`` (by file name, extension optional, a trailing comma not part of it) is the embedding's
    vectors as one group; anything else, a bare embedding name included, is plain BPE text."""
    import warnings

    tokenizer, files = with_embeddings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = [list(zip(c.ids, c.weights)) for c in chunk_prompt_comfyui(tokenizer, prompt)]
    want = ref.tokenize_with_weights(lambda text: tokenizer.encode(text, added=False), prompt, tokenizer.bos_id,
                                     tokenizer.eos_id, embeddings=files)
    assert got == want


def test_embedding_syntax_finds_the_vectors_and_warns_for_unknown_names(with_embeddings):
    tokenizer, _ = with_embeddings
    easyneg = [tokenizer.token_to_id("easyneg"), tokenizer.token_to_id("easyneg_1")]
    ids = chunk_prompt_comfyui(tokenizer, "a photo of embedding:easyneg, in a field")[0].ids
    assert ids[4:6] == easyneg and ids[6] == tokenizer.encode(",")[0]
    assert easyneg[0] not in chunk_prompt_comfyui(tokenizer, "a easyneg")[0].ids  # the bare name is a word
    assert easyneg[0] in chunk_prompt(tokenizer, "a easyneg")[0].ids  # (A1111's syntax: the embedding)
    ids = chunk_prompt_comfyui(tokenizer, "a <|endoftext|> b")[0].ids  # the end token written out stays one
    assert ids[:4] == [tokenizer.bos_id, *tokenizer.encode("a"), tokenizer.eos_id, *tokenizer.encode("b")]
    loaded = "easyneg, easyneg_1, badhandv4"
    with pytest.warns(UserWarning, match=f"embedding:nothing here does not exist, ignoring .*{loaded}"):
        ids = chunk_prompt_comfyui(tokenizer, "a embedding:nothing here")[0].ids
    assert ids[:4] == [tokenizer.bos_id, *tokenizer.encode("a here"), tokenizer.eos_id]

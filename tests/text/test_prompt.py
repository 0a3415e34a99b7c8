"""A1111 prompt syntax: the parser against A1111's documented examples and edge cases; extra-network tags."""
import pytest

from nanoldm.text.prompt import BREAK, extract_extra_networks, parse_prompt_attention

# A1111's own examples (modules/prompt_parser.py docstring), with its exact float results.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]

EDGE_CASES = [
    ("", [("", 1.0)]),
    ("[dim]", [("dim", 1 / 1.1)]),
    ("((a))", [("a", 1.1 * 1.1)]),
    ("[[a]]", [("a", (1 / 1.1) * (1 / 1.1))]),
    ("(a:0.5) (b:1.5)", [("a", 0.5), (" ", 1.0), ("b", 1.5)]),
    ("(a:-1)", [("a", -1.0)]),
    ("(a:.5)", [("a", 0.5)]),
    ("([a])", [("a", 1.0)]),  # 1/1.1 then x1.1 rounds back to exactly 1.0
    ("[unbalanced", [("unbalanced", 1 / 1.1)]),
    ("closing) only]", [("closing) only]", 1.0)]),  # nothing open: plain text
    ("a:1.2) b", [("a:1.2) b", 1.0)]),
    ("(a: 1.2)", [("a: 1.2", 1.1)]),  # a space before the number: not a weight
    ("(a:1.2.3)", [("a:1.2.3", 1.1)]),  # not a number: text (A1111 fails here)
    ("a \\\\ b", [("a \\ b", 1.0)]),
    ("a\\b", [("ab", 1.0)]),  # a lone backslash is dropped
    ("\\(a\\)", [("(a)", 1.0)]),
    ("a: b", [("a: b", 1.0)]),
]

BREAK_CASES = [
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("BREAK", [("", 1.0), BREAK, ("", 1.0)]),
    ("a BREAK", [("a", 1.0), BREAK, ("", 1.0)]),
    ("a (b) BREAK c", [("a ", 1.0), ("b", 1.1), ("", 1.0), BREAK, ("c", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), BREAK, ("", 1.0), BREAK, ("b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),  # only upper case
    ("aBREAK b", [("aBREAK b", 1.0)]),  # only as a word of its own
    ("(BREAK)", [("", 1.1), ("BREAK", -1.1), ("", 1.1)]),  # weighted: no longer the marker, as in A1111
]


@pytest.mark.parametrize("text, expected", A1111_EXAMPLES + EDGE_CASES + BREAK_CASES)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


def test_break_marker_is_a1111s():
    assert BREAK == ("BREAK", -1)


def test_weights_are_floats_and_pieces_tuples():
    for text, weight in parse_prompt_attention("x (y:2) [z]"):
        assert isinstance(text, str) and isinstance(weight, float)


@pytest.mark.parametrize("text, rest, tags", [
    ("a cat <hypernet:anime:0.8>", "a cat ", [("hypernet", "anime", ("0.8",))]),
    ("<lora:ink> x <lora:pen:0.5:te=1>", " x ", [("lora", "ink", ()), ("lora", "pen", ("0.5", "te=1"))]),
    ("no tags (here:1.2)", "no tags (here:1.2)", []),
    ("<not a tag> <:x>", "<not a tag> <:x>", []),
])
def test_extract_extra_networks(text, rest, tags):
    assert extract_extra_networks(text) == (rest, tags)

"""The built-in model: a shapes-world latent diffusion model shipped inside the package, used whenever no
``--model`` is given (``load_pipeline(None)``).

It was trained from nothing by ``nanoldm train all`` and stored in float16 (``nanoldm convert --half``); how
exactly (the command, seed, minutes per stage, the machine and its ``nanoldm eval`` table) is recorded beside it
in ``assets/shapes.json``. It draws 32x32 images of one or two coloured shapes from captions such as
"a large red circle at the top left" or "a blue square left of a yellow triangle".
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from nanoldm.data.vocabulary import caption_words
from nanoldm.text.prompt import extract_extra_networks

ASSETS = Path(__file__).parent / "assets"
BUILTIN_MODEL = ASSETS / "shapes.safetensors"
PROVENANCE = ASSETS / "shapes.json"


def builtin_model_path() -> Path:
    """Path of the built-in model file; a clear error if this installation lacks it."""
    if not BUILTIN_MODEL.is_file():
        raise FileNotFoundError(f"the built-in model {BUILTIN_MODEL} is missing from this installation; "
                                f"pass --model PATH, or train one with 'nanoldm train all'")
    return BUILTIN_MODEL


def provenance() -> dict:
    """How the built-in model was made (see the module docstring); {} if the record is missing."""
    return json.loads(PROVENANCE.read_text()) if PROVENANCE.is_file() else {}


def unknown_words(prompt: str, known: tuple[str, ...] = ()) -> list[str]:
    """The words of ``prompt`` the built-in model never saw in a caption (it was trained on the shapes world's
    base shapes; ``known``: words added since, e.g. textual-inversion tokens), in order, each once. Prompt syntax
    (weights, brackets, BREAK, ``<hypernet:...>`` tags) is not a word."""
    text, _ = extract_extra_networks(prompt)
    words = _WORD.findall(text.replace("BREAK", " ").lower())
    vocabulary = caption_words().union(*(_WORD.findall(k.lower()) for k in known))
    return list(dict.fromkeys(w for w in words if w not in vocabulary))


_WORD = re.compile(r"[^\W\d_]+")  # letters only: digits, punctuation and prompt syntax separate words

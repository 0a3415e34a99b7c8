"""The built-in model: a shapes-world latent diffusion model shipped inside the package, used whenever no
``--model`` is given (``load_pipeline(None)``).

It was trained from nothing by ``nanoldm train all`` and stored in float16 (``nanoldm convert --half``); how
exactly (the command, seed, minutes per stage, the machine and its ``nanoldm eval`` table) is recorded beside it
in ``assets/shapes.json``. It draws 32x32 images of one or two coloured shapes from captions such as
"a large red circle at the top left" or "a blue square left of a yellow triangle".
"""
from __future__ import annotations

import json
from pathlib import Path

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

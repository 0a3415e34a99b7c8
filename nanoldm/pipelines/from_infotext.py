"""Infotext in, settings out: an A1111 infotext (also a ComfyUI PNG saved with A1111-style ``parameters``, and
nanoldm's own) read back into :class:`~nanoldm.options.GenerateOptions`, so the image can be made again.

Each key A1111 1.10 writes that changes the image maps onto one field (``FIELDS``); keys that only describe the
run (``INFORMATIONAL``: model name, version, ...) are read and set nothing; every other key is kept, as written,
in ``InfotextSettings.unknown`` and named in a warning, never an error. Keys missing from the text take A1111's
defaults for them (no "Clip skip": 1; no "Hires upscale"/"Hires resize": Hires. fix off).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from nanoldm.options import GenerateOptions
from nanoldm.pipelines.infotext import PNG_KEY, parse_infotext, read_png_infotext

__all__ = ["FIELDS", "InfotextSettings", "InfotextWarning", "infotext_of", "read_infotext"]


class InfotextWarning(UserWarning):
    """Something in an infotext that nanoldm reads but cannot honour, or does not know."""


def _int(text: str) -> int:
    return int(float(text)) if "." in text else int(text)


def _bool(text: str) -> bool:
    if text.strip().lower() not in ("true", "false"):
        raise ValueError(f"expected True or False, got {text!r}")
    return text.strip().lower() == "true"


# infotext key (after WxH values are split into key-1 / key-2) -> (GenerateOptions field, converter)
FIELDS: dict[str, tuple[str, type]] = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", _int),
    "Sampler": ("sampler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", _int),
    "Size-1": ("width", _int),
    "Size-2": ("height", _int),
    "Clip skip": ("clip_skip", _int),
    "Denoising strength": ("strength", float),
    "Eta": ("eta", float),
    "Eta DDIM": ("eta", float),
    "Variation seed": ("subseed", _int),
    "Variation seed strength": ("subseed_strength", float),
    "Seed resize from-1": ("seed_resize_from_w", _int),
    "Seed resize from-2": ("seed_resize_from_h", _int),
    "ENSD": ("ensd", _int),
    "Hires upscale": ("hr_scale", float),
    "Hires resize-1": ("hr_resize_x", _int),
    "Hires resize-2": ("hr_resize_y", _int),
    "Hires steps": ("hr_second_pass_steps", _int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    # the schedule keys map onto the fields of the same names once GenerateOptions has them
    "Schedule type": ("scheduler", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Discard penultimate sigma": ("discard_penultimate_sigma", _bool),
    "Conventions": ("like", str),  # nanoldm's: written when not A1111's (like="diffusers" or "comfyui")
}
HIRES_KEYS = ("Hires upscale", "Hires resize-1")  # either one: Hires. fix was on
# keys that describe the run without changing the image nanoldm makes (or are checked, not set: Model hash)
INFORMATIONAL = frozenset({"Size", "Seed resize from", "Hires resize", "Model hash", "Model", "VAE hash", "VAE",
                           "Version", "RNG", "TI hashes", "Hypernet", "Hypernet strength", "Hypernet hash",
                           "Lora hashes", "Face restoration", "Token merging ratio", "Token merging ratio hr"})


@dataclass(frozen=True)
class InfotextSettings:
    """What an infotext says: ``options`` (its settings over GenerateOptions' defaults), the ``model_hash`` it
    names, and the ``unknown`` keys it holds, kept as written."""

    options: GenerateOptions
    model_hash: str | None = None
    unknown: dict[str, str] = field(default_factory=dict)
    rng: str | None = None

    def warnings(self, loaded_hash: str | None) -> list[str]:
        """One line per thing the regenerated image may not honour: a model hash that is not the loaded
        model's, noise A1111 drew on a GPU, keys nanoldm does not know."""
        lines = []
        if self.model_hash and loaded_hash and self.model_hash.lower() != loaded_hash.lower():
            lines.append(f"the infotext's model hash {self.model_hash} is not the loaded model's {loaded_hash}: "
                         f"the image will differ")
        if self.rng not in (None, "CPU"):
            lines.append(f"the infotext's noise came from RNG {self.rng}; nanoldm draws A1111's CPU noise")
        if self.unknown:
            keys = ", ".join(f"{k}: {v}" for k, v in self.unknown.items())
            lines.append(f"infotext keys nanoldm does not use (kept, ignored): {keys}")
        return lines


def read_infotext(text: str) -> InfotextSettings:
    """Infotext -> :class:`InfotextSettings`. A value that is not what its key holds (``Steps: many``) is a
    ValueError naming the key; unknown keys are kept, not fatal."""
    params = parse_infotext(text)
    known = {f.name for f in dataclasses.fields(GenerateOptions)}
    values, unknown = {}, {}
    for key, value in params.items():
        if key in FIELDS and FIELDS[key][0] in known:
            name, convert = FIELDS[key]
            try:
                values[name] = convert(value)
            except ValueError:
                raise ValueError(f"infotext: {key} {value!r} is not a valid {convert.__name__.strip('_')}") from None
        elif key not in INFORMATIONAL and not _split_half(key, params):
            unknown[key] = value
    if any(key in params for key in HIRES_KEYS):
        values["enable_hr"] = True
    return InfotextSettings(options=GenerateOptions(**values), model_hash=params.get("Model hash"),
                            unknown=unknown, rng=params.get("RNG"))


def _split_half(key: str, params: dict) -> bool:
    """``Key-1`` / ``Key-2`` of a WxH value whose ``Key`` is itself known or unknown (reported once, whole)."""
    return key[-2:] in ("-1", "-2") and key[:-2] in params


def infotext_of(source: str | Path | Image.Image) -> str:
    """The infotext of a PNG (a path, or an open PIL image) or the text itself. A PNG without A1111
    ``parameters`` is a ValueError that says so (a ComfyUI workflow PNG carries its graph, not these)."""
    if isinstance(source, Image.Image):
        text = source.info.get(PNG_KEY)
        name = "the image"
    elif isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                      and source.lower().endswith(".png")):
        try:
            text = read_png_infotext(source)
        except FileNotFoundError:
            raise FileNotFoundError(f"{source}: no such PNG file") from None
        name = str(source)
    else:
        return str(source)
    if not text:
        raise ValueError(f"{name} has no A1111 'parameters' text to read settings from (ComfyUI's own workflow "
                         f"metadata is not read)")
    return text

"""A1111's "infotext": the generation parameters stored in a PNG's ``parameters`` text chunk.

Layout (one string, lines separated by "\\n"):

    a photo of a cat, (masterpiece:1.2)           <- the prompt, any number of lines
    Negative prompt: blurry, lowres               <- only if there is a negative prompt; may span lines too
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 32x32, Model hash: 0123456789, Model: name

The last line is ``key: value`` pairs joined by ", ". A value holding a comma, a colon or a newline is
written as a JSON string ("..."). A key whose value equals the key itself is written alone.

`parse_infotext` keeps every value as the string written (JSON strings decoded), so nothing is lost;
converting ("20" -> 20) is left to the reader, which knows each key's type. Like A1111 it also splits a
``WxH`` value into ``<key>-1`` and ``<key>-2`` (``Size`` -> ``Size-1`` = W, ``Size-2`` = H), and treats the
last line as parameters only if it holds at least three ``key: value`` pairs. Keys missing from the text
are missing from the dict: A1111 reads a missing ``Clip skip`` as 1.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nanoldm.checkpoint.hashing import sha256_file
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.conventions import infotext_names
from nanoldm.pipelines.hires import second_pass_options, upscaler_name

__all__ = ["format_infotext", "generation_params", "seed_params", "hires_params", "parse_infotext", "save_png",
           "read_png_infotext", "model_hash", "PNG_KEY"]

PNG_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
# key: value, where the value is a JSON string or runs to the next comma
_PARAM = re.compile(r"""
    \s*(?P<key>\w[\w \-/]+):\s*
    (?P<value>"(?:\\.|[^\\"])+"|[^,]*)
    (?:,|$)
""", re.VERBOSE)
_SIZE = re.compile(r"^(\d+)x(\d+)$")


# ---- writing ----

def _quote(value) -> str:
    """A value as written in the parameters line: JSON-quoted if it holds a comma, colon or newline."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def format_infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """Prompt, negative prompt and parameters in A1111's layout; parameters whose value is None are left out."""
    line = ", ".join(key if key == value else f"{key}: {_quote(value)}"
                     for key, value in params.items() if value is not None)
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def _number(value):
    """7.0 -> 7, as A1111's infotexts usually show whole numbers; anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def generation_params(*, steps: int, sampler: str, cfg_scale: float, seed: int, width: int, height: int,
                      model_hash: str | None = None, model: str | None = None,
                      denoising_strength: float | None = None, clip_skip: int = 1,
                      seed_extras: dict | None = None, extra: dict | None = None,
                      schedule_type: str | None = None) -> dict:
    """The usual parameters under A1111's names and in its order (``create_infotext``); ``Clip skip`` only when
    not 1, ``Schedule type`` only when given; ``seed_extras``: :func:`seed_params`' keys, each put where A1111
    puts it."""
    seed_extras = seed_extras or {}
    params = {
        "Steps": steps,
        "Sampler": sampler,
        "Schedule type": schedule_type,
        "CFG scale": _number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model,
        **{key: seed_extras.get(key) for key in ("Variation seed", "Variation seed strength", "Seed resize from")},
        "Denoising strength": None if denoising_strength is None else _number(denoising_strength),
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "ENSD": seed_extras.get("ENSD"),
    }
    return {**params, **(extra or {})}


# A1111's samplers whose later noise ENSD re-seeds (their "uses_ensd" option; DDIM's only with eta > 0). DDPM is
# not A1111's, but its noise moves with ENSD too.
ENSD_SAMPLERS = frozenset({"Euler a", "DPM2 a", "DPM++ 2S a", "DPM fast", "DPM adaptive", "DPM2 a Karras",
                           "DPM++ 2S a Karras", "DDPM"})


def _sampler_name(opts: GenerateOptions, sampler: str) -> str:
    """The infotext's name of ``sampler`` under ``opts``' conventions ("DPM++ 2M Karras" -> "DPM++ 2M")."""
    return infotext_names(dataclasses.replace(opts, sampler=sampler))[0]


def uses_ensd(name: str, eta: float) -> bool:
    """A1111's ``is_sampler_using_eta_noise_seed_delta``: does ENSD change the image of the sampler so named?"""
    return name in ENSD_SAMPLERS or (name == "DDIM" and eta > 0)


def seed_params(opts: GenerateOptions, subseed: int | None) -> dict:
    """Variation seed (this image's ``subseed``), its strength, the seed-resize size and ENSD, as A1111 writes them:
    each only when it is on; ENSD only when a pass's sampler uses it (A1111 looks at the first pass's only; the
    Hires. fix sampler counts here too, so that reading the infotext back gives the same image)."""
    samplers = [opts.sampler] + ([opts.hr_sampler_name] if opts.enable_hr and opts.hr_sampler_name else [])
    on = opts.subseed_strength != 0
    resized = opts.seed_resize_from_w > 0 and opts.seed_resize_from_h > 0
    return {
        "Variation seed": subseed if on else None,
        "Variation seed strength": _number(opts.subseed_strength) if on else None,
        "Seed resize from": f"{opts.seed_resize_from_w}x{opts.seed_resize_from_h}" if resized else None,
        "ENSD": opts.ensd if opts.ensd and any(uses_ensd(_sampler_name(opts, s), opts.eta) for s in samplers)
        else None,
    }


def hires_params(opts: GenerateOptions) -> dict:
    """The Hires. fix keys A1111 adds (``StableDiffusionProcessingTxt2Img.init``), in its order; none when off.
    ("Denoising strength" is written in its usual place by :func:`generation_params`.)"""
    if not opts.enable_hr:
        return {}
    params = {}
    if opts.hr_sampler_name and _sampler_name(opts, opts.hr_sampler_name) != _sampler_name(opts, opts.sampler):
        params["Hires sampler"] = _sampler_name(opts, opts.hr_sampler_name)
    if opts.hr_prompt and opts.hr_prompt != opts.prompt:
        params["Hires prompt"] = opts.hr_prompt
    if opts.hr_negative_prompt and opts.hr_negative_prompt != opts.negative_prompt:
        params["Hires negative prompt"] = opts.hr_negative_prompt
    # A1111's get_sigmas writes it in the hires pass when a schedule of its own ran there (not "Automatic": the
    # model's sigmas) and differs from the first pass's (which, when "Automatic", it did not record)
    hires_schedule = infotext_names(second_pass_options(opts))[1]
    if hires_schedule not in (None, "Automatic") and hires_schedule != infotext_names(opts)[1]:
        params["Hires schedule type"] = hires_schedule
    if opts.hr_resize_x == 0 and opts.hr_resize_y == 0:
        params["Hires upscale"] = _number(float(opts.hr_scale))
    else:
        params["Hires resize"] = f"{opts.hr_resize_x}x{opts.hr_resize_y}"
    if opts.hr_second_pass_steps:
        params["Hires steps"] = opts.hr_second_pass_steps
    if opts.hr_upscaler is not None:
        params["Hires upscaler"] = upscaler_name(opts.hr_upscaler)
    return params


# ---- reading ----

def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """Prompt lines, then from a "Negative prompt:" line on, negative prompt lines; each stripped.

    Lines are joined with "\n", except that (as in A1111) empty lines before the first non-empty one vanish.
    """
    texts = {"prompt": "", "negative": ""}
    target = "prompt"
    for line in (line.strip() for line in lines):
        if line.startswith(NEGATIVE_PREFIX):
            target, line = "negative", line[len(NEGATIVE_PREFIX):].strip()
        texts[target] += f"\n{line}" if texts[target] else line
    return texts["prompt"], texts["negative"]


def _unquote(value: str) -> str:
    """A JSON-quoted value decoded; a value that is not valid JSON is kept as written."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _parse_params(line: str) -> dict[str, str]:
    """The parameters line -> {key: value}, with ``WxH`` values also split into ``key-1``/``key-2``."""
    params: dict[str, str] = {}
    for key, value in _PARAM.findall(line):
        value = _unquote(value)
        params[key] = value
        size = _SIZE.match(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.group(1), size.group(2)
    return params


def parse_infotext(text: str) -> dict[str, str]:
    """Infotext -> ``{"Prompt": ..., "Negative prompt": ..., "Steps": "20", ...}``; all values strings."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no parameters line: it belongs to the prompt
        lines, last = [*lines, last], ""
    prompt, negative = _split_prompts(lines)
    return {"Prompt": prompt, "Negative prompt": negative, **_parse_params(last)}


# ---- files ----

def save_png(image: Image.Image, path: str | Path, infotext: str | None) -> None:
    """Write `image` as a PNG with `infotext` in its ``parameters`` text chunk (none if None)."""
    info = PngInfo()
    if infotext is not None:
        info.add_text(PNG_KEY, infotext)  # tEXt; PIL writes iTXt when the text is not Latin-1
    image.save(path, format="PNG", pnginfo=info)


def read_png_infotext(path: str | Path) -> str | None:
    """The ``parameters`` text of a PNG, or None if it has none."""
    with Image.open(path) as image:
        image.load()  # text chunks after the image data are read only now
        return getattr(image, "text", {}).get(PNG_KEY, image.info.get(PNG_KEY))


def model_hash(path: str | Path) -> str:
    """A1111's short model hash ("AutoV2", written as ``Model hash``): the first 10 hex digits of the
    SHA-256 of the whole file."""
    return sha256_file(path)[:10]

"""Every LoRA key name nanoldm reads or writes, in one file (the LoRA half of :mod:`keymap`).

A LoRA file names the layer each pair of low-rank factors adapts. Ours is the layer's path in
``LatentDiffusion``: ``unet.<UNet module path>`` or ``text_encoder.<CLIP module path>``. Files spell it:

* **kohya** (sd-scripts, read by A1111, ComfyUI, diffusers): ``lora_unet_<path with _ for .>`` and
  ``lora_te_text_model_<path with _>``, each with ``.lora_down.weight``, ``.lora_up.weight`` and an optional
  ``.alpha``. The UNet path is diffusers' module path (= ours) or, in some shared files, the CompVis path
  (``input_blocks.1.1.transformer_blocks.0.attn1.to_q``); both are read, ours is written.
* **PEFT** (diffusers' ``save_lora_weights``): ``unet.<path>.lora_A.weight`` (down) / ``.lora_B.weight`` (up),
  ``text_encoder.text_model.<path>...``; older diffusers files say ``.lora.down.weight`` / ``.lora.up.weight``,
  ``.lora_linear_layer.down.weight``, or ``<attn>.processor.to_q_lora.down.weight``.

Underscores cannot be split back into dots by rule (``to_q``, ``proj_in``), so kohya names are matched against
a table built by walking the model's topology (:func:`kohya_table`), exactly as :mod:`keymap` does.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from nanoldm.checkpoint.keymap import DIFFUSERS_TEXT, SD_UNET, text_to_sd, unet_to_sd
from nanoldm.config import ModelConfig

KOHYA_UNET = "lora_unet_"
KOHYA_TEXT = "lora_te_"
KOHYA_TEXT_MODEL = KOHYA_TEXT + "text_model_"
KOHYA_DOWN, KOHYA_UP, KOHYA_ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
PEFT_PARTS = ("unet.", "text_encoder.")
PEFT_DOWN, PEFT_UP = ".lora_A.weight", ".lora_B.weight"
# Older diffusers spellings of the two factors: (down suffix, up suffix).
OLD_DIFFUSERS_FACTORS = ((".lora.down.weight", ".lora.up.weight"),
                         (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"))
# diffusers' attention-processor LoRA (<= 0.20): "<attn>.processor.to_q_lora.down.weight" adapts "<attn>.to_q".
PROCESSOR_FACTORS = (".down.weight", ".up.weight")
PROCESSOR_LAYERS = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}

DOWN, UP, ALPHA = "down", "up", "alpha"

# Other model families: markers in the key names and in kohya's metadata.
SDXL_KEY_PREFIXES = ("lora_te1_", "lora_te2_", "text_encoder_2.")
FAMILY_CONTEXT_WIDTH = {1024: "SD 2.x", 2048: "SDXL"}  # the cross-attention context width of each family


def kohya_table(cfg: ModelConfig) -> dict[str, str]:
    """kohya module name -> our module path, for every weight-carrying layer of ``cfg``'s UNet and text encoder;
    UNet layers are listed under their diffusers spelling and their CompVis spelling."""
    table: dict[str, str] = {}
    for ours, sd in unet_to_sd(cfg.unet).items():
        if ours.endswith(".weight"):
            path = ours.removesuffix(".weight")
            table[KOHYA_UNET + path.replace(".", "_")] = "unet." + path
            compvis = sd.removeprefix(SD_UNET).removesuffix(".weight")
            table[KOHYA_UNET + compvis.replace(".", "_")] = "unet." + path
    for ours in text_to_sd(cfg.text):
        if ours.endswith(".weight"):
            path = ours.removesuffix(".weight")
            table[KOHYA_TEXT_MODEL + path.replace(".", "_")] = "text_encoder." + path
    return table


def ours_to_kohya(path: str) -> str:
    """Our module path -> kohya's name (diffusers spelling): ``unet.a.to_q`` -> ``lora_unet_a_to_q``."""
    part, _, rest = path.partition(".")
    if part == "unet":
        return KOHYA_UNET + rest.replace(".", "_")
    if part == "text_encoder":
        return KOHYA_TEXT_MODEL + rest.replace(".", "_")
    raise ValueError(f"LoRA layer {path!r} is in neither the UNet nor the text encoder")


def ours_to_peft(path: str) -> str:
    """Our module path -> the PEFT module name diffusers uses (the text encoder's carries ``text_model.``)."""
    part, _, rest = path.partition(".")
    if part == "text_encoder":
        return f"text_encoder.{DIFFUSERS_TEXT}{rest}"
    if part == "unet":
        return path
    raise ValueError(f"LoRA layer {path!r} is in neither the UNet nor the text encoder")


def peft_to_ours(name: str) -> str:
    """A PEFT / diffusers module name -> our module path (processor names -> the layer they adapt)."""
    head, _, last = name.rpartition(".")
    if head.endswith(".processor") and last in PROCESSOR_LAYERS:
        name = f"{head.removesuffix('.processor')}.{PROCESSOR_LAYERS[last]}"
    if name.startswith("text_encoder."):
        return "text_encoder." + name.removeprefix("text_encoder.").removeprefix(DIFFUSERS_TEXT)
    return name


def split_key(key: str) -> tuple[str, str, str] | None:
    """A LoRA file key -> (layout "kohya" | "peft", module name as the file spells it, DOWN | UP | ALPHA);
    None for a key that is not a LoRA factor."""
    if key.startswith((KOHYA_UNET, KOHYA_TEXT)):
        for suffix, role in ((KOHYA_DOWN, DOWN), (KOHYA_UP, UP), (KOHYA_ALPHA, ALPHA)):
            if key.endswith(suffix):
                return "kohya", key.removesuffix(suffix), role
        return None
    if key.startswith(PEFT_PARTS):
        pairs = ((PEFT_DOWN, PEFT_UP), *OLD_DIFFUSERS_FACTORS)
        if ".processor." in key:
            pairs += (PROCESSOR_FACTORS,)
        for suffix, role in [(d, DOWN) for d, _ in pairs] + [(u, UP) for _, u in pairs] + [(KOHYA_ALPHA, ALPHA)]:
            if key.endswith(suffix):
                return "peft", key.removesuffix(suffix), role
    return None


def family_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """"SDXL" / "SD 2.x" when kohya's or modelspec's metadata says the file is for one; else None."""
    version = metadata.get("ss_base_model_version", "").lower()
    arch = metadata.get("modelspec.architecture", "").lower()
    if version.startswith("sdxl") or "-xl-" in arch:
        return "SDXL"
    if version.startswith("sd_v2") or metadata.get("ss_v2", "").lower() == "true" or "-v2" in arch:
        return "SD 2.x"
    return None


def family_from_keys(keys: Iterable[str]) -> str | None:
    """"SDXL" when a key names one of SDXL's two text encoders; else None."""
    return "SDXL" if any(k.startswith(SDXL_KEY_PREFIXES) for k in keys) else None


def is_cross_attention_key(name: str) -> bool:
    """Does a module name (any spelling) name a cross-attention key/value projection (in: context width)?"""
    return name.replace(".", "_").endswith(("attn2_to_k", "attn2_to_v"))

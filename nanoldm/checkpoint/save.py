"""Write a ``LatentDiffusion`` as our single file, an SD 1.x single file, or a diffusers folder.
Every file is written atomically; a diffusers folder is assembled beside its destination and renamed into place."""
from __future__ import annotations

import json
from pathlib import Path

from nanoldm.checkpoint import diffusers_config, keymap
from nanoldm.checkpoint.formats import CheckpointError, atomic_folder, write_safetensors, write_text
from nanoldm.checkpoint.load import ADDED_TOKENS_KEY, CONFIG_KEY, DIFFUSERS_PARTS, LAYOUT_KEY
from nanoldm.model import LatentDiffusion

FORMATS = ("nanoldm", "diffusers", "sd")


def save_model(model: LatentDiffusion, path: str | Path, *, format: str = "nanoldm", overwrite: bool = False) -> None:
    path = Path(path)
    check_output(path, format, overwrite)
    if format == "diffusers":
        save_diffusers(model, path)
    else:
        save_single_file(model, path, sd_layout=format == "sd")


def check_output(path: Path, format: str, overwrite: bool) -> None:
    """The format is known, the output does not exist (unless ``overwrite``), single files are .safetensors."""
    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; choose one of {', '.join(FORMATS)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if format != "diffusers" and path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{path}: {format} checkpoints are written as .safetensors files (we never write pickles)")


def save_single_file(model: LatentDiffusion, path: str | Path, *, sd_layout: bool = False) -> None:
    """Our single file, or with ``sd_layout`` an SD 1.x single file that A1111/ComfyUI read. Both carry our
    config in the metadata (other tools ignore it), so heads and presets survive the round trip."""
    metadata = {"format": "pt", CONFIG_KEY: model.config.to_json(),
                ADDED_TOKENS_KEY: json.dumps(model.tokenizer.added_tokens if model.tokenizer else [])}
    state = model.state_dict()
    if sd_layout:
        metadata[LAYOUT_KEY] = "sd"
        state = keymap.ours_to_sd(state, model.config)
    write_safetensors(path, state, metadata)


def save_diffusers(model: LatentDiffusion, folder: str | Path) -> None:
    """The folder layout of a diffusers ``StableDiffusionPipeline`` (no safety checker)."""
    folder = Path(folder)
    cfg = model.config
    parts = keymap.ours_to_diffusers(model.state_dict(), cfg)
    with atomic_folder(folder) as tmp:
        for part, weights in DIFFUSERS_PARTS:
            write_safetensors(tmp / part / f"{weights}.safetensors", parts[part], {"format": "pt"})
        write_diffusers_configs(cfg, model.tokenizer, tmp)


def write_diffusers_configs(cfg, tokenizer, folder: Path) -> None:
    """Everything of a diffusers folder but the weights: each part's config, the scheduler, the index, the
    tokenizer (if any)."""
    configs = {
        "unet": diffusers_config.unet_config_to_diffusers(
            cfg.unet, sample_size=cfg.image_size // cfg.vae.downsample_factor),
        "vae": diffusers_config.vae_config_to_diffusers(cfg.vae, sample_size=cfg.image_size),
        "text_encoder": diffusers_config.text_config_to_transformers(cfg.text),
    }
    for part, _ in DIFFUSERS_PARTS:
        write_text(folder / part / "config.json", json.dumps(configs[part], indent=2))
    write_text(folder / "scheduler" / "scheduler_config.json",
               json.dumps(diffusers_config.schedule_config_to_diffusers(cfg.schedule), indent=2))
    write_text(folder / "model_index.json", json.dumps(diffusers_config.model_index(), indent=2))
    if tokenizer is not None:
        tokenizer.save_folder(folder / "tokenizer")


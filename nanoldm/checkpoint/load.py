"""Load any supported checkpoint into a ``LatentDiffusion``: our single file, an SD 1.x single file
(``.safetensors`` or weights-only ``.ckpt``), or a diffusers folder. The format is detected, names are
translated by ``keymap``, and every tensor is checked against the architecture before loading."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from nanoldm.checkpoint import diffusers_config, keymap
from nanoldm.checkpoint.formats import CheckpointError, read_tensors
from nanoldm.checkpoint.infer import infer_config_from_sd
from nanoldm.config import ModelConfig
from nanoldm.model import LatentDiffusion
from nanoldm.text.tokenizer import CLIPTokenizer

CONFIG_KEY = "nanoldm_config"  # our safetensors metadata key holding ModelConfig JSON
ADDED_TOKENS_KEY = "nanoldm_added_tokens"  # JSON list of tokens appended to the CLIP vocabulary
LAYOUT_KEY = "nanoldm_layout"  # "sd" when our config rides along in an SD single file we wrote


def load_model(path: str | Path, *, config: ModelConfig | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = torch.float32) -> LatentDiffusion:
    """Detect the format of ``path`` and load it (as float32 unless ``dtype`` says otherwise; ``None`` keeps
    the file's dtypes). ``config`` overrides what a single file says or what its shapes suggest (an SD file
    does not record its attention heads). Raises ``CheckpointError`` with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    model = _load_diffusers(path) if path.is_dir() else _load_file(path, config)
    return model.to(device=device, dtype=dtype).eval()


def _load_file(path: Path, config: ModelConfig | None) -> LatentDiffusion:
    tensors, metadata = read_tensors(path)
    if CONFIG_KEY in metadata:  # written by us: the exact config (heads cannot be read off the shapes)
        config = config or ModelConfig.from_json(metadata[CONFIG_KEY])
        if metadata.get(LAYOUT_KEY) == "sd":
            tensors = keymap.sd_to_ours(tensors, config)
    else:  # an SD 1.x file from elsewhere
        try:
            config = config or infer_config_from_sd(tensors)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        tensors = keymap.sd_to_ours(tensors, config)
    tokenizer = _default_tokenizer(json.loads(metadata.get(ADDED_TOKENS_KEY, "[]")))
    return _assemble(config, tensors, tokenizer, str(path))


DIFFUSERS_PARTS = (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"))
"""The weight-carrying parts of a diffusers folder and the stem of each part's weight file."""


def _load_diffusers(folder: Path) -> LatentDiffusion:
    config, tokenizer = read_diffusers_config(folder)
    parts = {part: read_tensors(find_weights(folder / part, stem, folder))[0] for part, stem in DIFFUSERS_PARTS}
    return _assemble(config, keymap.diffusers_to_ours(parts, config), tokenizer, str(folder))


def read_diffusers_config(folder: Path):
    """The ``ModelConfig`` and tokenizer of a diffusers folder, from its JSON files (no weight is read)."""
    configs = {part: _read_json(folder / part / "config.json", folder) for part, _ in DIFFUSERS_PARTS}
    scheduler = folder / "scheduler" / "scheduler_config.json"
    config = ModelConfig(
        unet=diffusers_config.unet_config_from_diffusers(configs["unet"]),
        vae=diffusers_config.vae_config_from_diffusers(configs["vae"]),
        text=diffusers_config.text_config_from_transformers(configs["text_encoder"]),
        **({"schedule": diffusers_config.schedule_config_from_diffusers(_read_json(scheduler, folder))}
           if scheduler.exists() else {}),
    )
    sample_size = configs["unet"].get("sample_size")
    if isinstance(sample_size, int):
        config = dataclasses.replace(config, image_size=sample_size * config.vae.downsample_factor)
    tokenizer = (CLIPTokenizer.from_folder(folder / "tokenizer") if (folder / "tokenizer").exists()
                 else _default_tokenizer([]))
    return config, tokenizer


def _assemble(config: ModelConfig, state: dict[str, torch.Tensor], tokenizer, source: str) -> LatentDiffusion:
    model = LatentDiffusion.from_config(config, tokenizer=tokenizer, device="meta")
    model.load_state_dict(state, source=source)
    return model


def _read_json(path: Path, folder: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"{folder}: not a diffusers Stable Diffusion folder: missing {path.relative_to(folder)}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def find_weights(part_dir: Path, stem: str, folder: Path) -> Path:
    """diffusers' weight file of one component: safetensors preferred, then fp16 variants, then pickles."""
    for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors", f"{stem}.bin", f"{stem}.fp16.bin",
                 "pytorch_model.bin"):
        if (part_dir / name).exists():
            return part_dir / name
    raise CheckpointError(f"{folder}: not a diffusers Stable Diffusion folder: no weights in {part_dir.name}/ "
                          f"(expected {stem}.safetensors)")


def _default_tokenizer(added_tokens: list[str]):
    """CLIP's BPE from an installed package (SD 1.x files carry no vocabulary), plus any added tokens."""
    tokenizer = CLIPTokenizer.default()
    if added_tokens:
        tokenizer.add_tokens(added_tokens)
    return tokenizer

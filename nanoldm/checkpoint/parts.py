"""The files of parts trained alone, each a ``.safetensors`` with its constructor's arguments as JSON metadata:

- ``vae.safetensors`` (``nanoldm train vae``): an :class:`AutoencoderKL`, metadata ``format = nanoldm.vae``,
  its ``AutoencoderConfig`` and the latent ``scale_factor``;
- ``clip.safetensors`` (``nanoldm train clip``): a :class:`CLIP`, metadata ``format = nanoldm.clip`` and its
  :class:`CLIPConfig`;
- ``condition.safetensors`` (``nanoldm train ldm --condition class|layout``): a :class:`ClassEmbedding` or
  :class:`LayoutEncoder`, metadata ``nanoldm_condition``: its kind and constructor arguments.

Each loader raises :class:`CheckpointError` for a file the matching writer did not write. The key names are
the modules' own state-dict names: once a file is out, they are forever.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from nanoldm.autoencoder.autoencoder import AutoencoderKL
from nanoldm.checkpoint.formats import CheckpointError, read_metadata, read_tensors, write_safetensors
from nanoldm.conditioning import ClassEmbedding, LayoutEncoder
from nanoldm.config import ModelConfig
from nanoldm.text.clip_model import CLIP, CLIPConfig

VAE_FORMAT = "nanoldm.vae"
CLIP_FORMAT = "nanoldm.clip"
CONDITION_META = "nanoldm_condition"


def save_vae(path: str | Path, vae: AutoencoderKL) -> None:
    """State dict + ``AutoencoderConfig`` JSON (``scale_factor`` included) in the metadata, atomically."""
    config = json.dumps(ModelConfig(vae=vae.cfg).to_dict()["vae"], sort_keys=True)
    write_safetensors(path, vae.state_dict(), {"format": VAE_FORMAT, "config": config,
                                               "scale_factor": repr(vae.cfg.scale_factor)})


def is_vae_file(path: str | Path) -> bool:
    """True for a file :func:`save_vae` wrote (read from its header only)."""
    path = Path(path)
    return path.suffix.lower() == ".safetensors" and path.is_file() and read_metadata(path).get("format") == VAE_FORMAT


def load_vae(path: str | Path) -> AutoencoderKL:
    """The autoencoder that :func:`save_vae` wrote, in eval mode."""
    tensors, meta = read_tensors(path)
    if meta.get("format") != VAE_FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not an autoencoder written by 'nanoldm train vae' (no {VAE_FORMAT} metadata)")
    vae = AutoencoderKL(ModelConfig.from_dict({"vae": json.loads(meta["config"])}).vae)
    vae.load_state_dict(tensors)
    return vae.eval()


def save_clip(path: str | Path, model: CLIP) -> None:
    """Weights + ``CLIPConfig`` JSON in the metadata, written atomically."""
    write_safetensors(path, model.state_dict(), {"format": CLIP_FORMAT, "config": model.cfg.to_json()})


def load_clip(path: str | Path) -> CLIP:
    """The CLIP that :func:`save_clip` wrote, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CLIP file (train one with 'nanoldm train clip')")
    tensors, meta = read_tensors(path)
    if meta.get("format") != CLIP_FORMAT or "config" not in meta:
        raise CheckpointError(f"{path}: not a CLIP written by 'nanoldm train clip' (no {CLIP_FORMAT} metadata)")
    model = CLIP(CLIPConfig.from_json(meta["config"]))
    model.load_state_dict(tensors)
    return model.eval()


def condition_spec(module: torch.nn.Module) -> dict:
    """The kind and constructor arguments of a condition module (what :func:`load_condition` rebuilds from)."""
    if isinstance(module, ClassEmbedding):
        return {"kind": "class", "num_classes": module.num_classes, "context_dim": module.context_dim}
    return {"kind": "layout", "num_classes": module.num_classes, "context_dim": module.context_dim,
            "max_objects": module.max_objects, "fourier_bands": module.fourier_bands}


def save_condition(path: str | Path, module: torch.nn.Module) -> None:
    """The condition module's weights with its spec as metadata, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    write_safetensors(path, tensors, metadata={CONDITION_META: json.dumps(condition_spec(module))})


def load_condition(path: str | Path) -> torch.nn.Module:
    """Rebuild a condition module written by :func:`save_condition`; CheckpointError for any other file."""
    tensors, meta = read_tensors(path)
    if CONDITION_META not in meta:
        raise CheckpointError(f"{path}: not a condition module written by 'nanoldm train ldm --condition "
                              f"class|layout' (no {CONDITION_META} metadata)")
    spec = json.loads(meta[CONDITION_META])
    kind = spec.pop("kind")
    module = ClassEmbedding(**spec) if kind == "class" else LayoutEncoder(**spec)
    module.load_state_dict(tensors)
    return module

"""The metadata kohya's ``sd-scripts`` (``train_network.py``) writes into a LoRA file, for a LoRA trained here.

A1111 shows these fields in its LoRA card and reads ``ss_network_*`` and ``ss_base_model_version`` to tell what
the file is; every value is a string, formatted as kohya formats it (``str()`` of its Python value: ``"8"`` for
the dim, ``"8.0"`` for a float alpha, ``"None"`` for an unset option, ``"True"``/``"False"``). The base model is
named by file name, kohya's old hash (SHA-256 of the 64 KiB at offset 1 MiB, 8 hex digits: A1111's legacy
``model hash``) and the file's full SHA-256. ``sshs_*`` hashes (kohya's precomputed index of the file) are left
out: A1111 computes them when it lists the file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nanoldm.checkpoint.hashing import sha256_file
from nanoldm.config import PredictionType
from nanoldm.model import LatentDiffusion
from nanoldm.training.loop import TrainConfig

NETWORK_MODULE = "networks.lora"  # kohya's module name for LoRA / LoCon trained by networks/lora.py
SD2_CONTEXT_WIDTH = 1024  # SD 2.x's text width; anything else trained here is SD 1.x-shaped (kohya: not v2)


def legacy_model_hash(path: Path) -> str:
    """kohya's ``model_hash``: SHA-256 of the 64 KiB at offset 1 MiB, first 8 hex digits (A1111's old hash)."""
    with open(path, "rb") as file:
        file.seek(0x100000)
        return hashlib.sha256(file.read(0x10000)).hexdigest()[:8]


def base_model_version(model: LatentDiffusion) -> tuple[bool, str]:
    """kohya's (``ss_v2``, ``ss_base_model_version``): ``sd_v1`` or ``sd_v2``, ``_v`` appended for v-prediction."""
    v2 = model.config.unet.context_dim == SD2_CONTEXT_WIDTH
    v_pred = model.config.schedule.prediction_type is PredictionType.V
    return v2, "sd" + ("_v2" if v2 else "_v1") + ("_v" if v_pred else "")


def kohya_metadata(model: LatentDiffusion, options, loop: TrainConfig, *, name: str, steps: int, images: int,
                   started_at: float, finished_at: float, base: Path | None) -> dict[str, str]:
    """The ``ss_*`` fields of a finished run (``options``: a :class:`~nanoldm.training.lora.LoraTraining`;
    times in unix seconds)."""
    spec, latent = options.spec, options.latent
    v2, version = base_model_version(model)
    network_args = {}
    if spec.conv_rank:
        network_args = {"conv_dim": str(spec.conv_rank), "conv_alpha": str(spec.conv_alpha or spec.conv_rank)}
    if spec.rank_dropout:
        network_args["rank_dropout"] = str(spec.rank_dropout)
    lr = float(loop.lr)
    meta = {
        "ss_session_id": str(loop.seed),
        "ss_training_started_at": str(started_at),
        "ss_training_finished_at": str(finished_at),
        "ss_output_name": name,
        "ss_learning_rate": str(lr),
        "ss_text_encoder_lr": str(lr if "text" in spec.targets else None),
        "ss_unet_lr": str(lr),
        "ss_num_train_images": str(images),
        "ss_num_reg_images": "0",
        "ss_num_batches_per_epoch": str(-(-images // loop.batch_size)),
        "ss_num_epochs": str(-(-steps * loop.batch_size // max(images, 1))),
        "ss_gradient_checkpointing": "False",
        "ss_gradient_accumulation_steps": str(loop.grad_accum),
        "ss_max_train_steps": str(loop.steps),
        "ss_lr_warmup_steps": str(loop.warmup_steps),
        "ss_lr_scheduler": "constant_with_warmup" if loop.warmup_steps else "constant",
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(float(spec.alpha or spec.rank)),
        "ss_network_dropout": "None",
        "ss_mixed_precision": "bf16" if loop.bf16 else "no",
        "ss_full_fp16": "False",
        "ss_v2": str(v2),
        "ss_base_model_version": version,
        "ss_clip_skip": "None",
        "ss_cache_latents": "True",
        "ss_seed": str(loop.seed),
        "ss_noise_offset": "None",
        "ss_optimizer": "torch.optim.adamw.AdamW" + (f"(weight_decay={loop.weight_decay})" if loop.weight_decay else ""),
        "ss_max_grad_norm": str(loop.grad_clip if loop.grad_clip is not None else 0.0),
        "ss_caption_dropout_rate": str(latent.cond_drop),
        "ss_min_snr_gamma": str(latent.min_snr_gamma),
        "ss_total_batch_size": str(loop.batch_size),
        "ss_resolution": str((model.config.image_size, model.config.image_size)),
        "ss_steps": str(steps),
        "ss_epoch": str(-(-steps * loop.batch_size // max(images, 1))),
    }
    if network_args:
        meta["ss_network_args"] = json.dumps(network_args)
    if base is not None:
        if base.is_file():
            meta["ss_sd_model_hash"] = legacy_model_hash(base)
            meta["ss_new_sd_model_hash"] = sha256_file(base)
        meta["ss_sd_model_name"] = base.name
    return meta

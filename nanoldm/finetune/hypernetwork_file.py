"""Hypernetwork files: A1111's ``.pt`` and a ``.safetensors`` sibling.

A1111's ``.pt`` is a pickled dict (read here ONLY with ``torch.load(weights_only=True)``; a pickle that would
run code is refused, never executed):

    {768: (state_dict_k, state_dict_v), 320: (...), ...,     integer context width -> the K and V MLPs'
                                                             state dicts (``linear.0.weight``, ``linear.0.bias``, ...)
     'name': str, 'step': int, 'sd_checkpoint': str | None (model hash), 'sd_checkpoint_name': str | None,
     'layer_structure': [1.0, 2.0, 1.0], 'activation_func': str | None, 'is_layer_norm': bool,
     'weight_initialization': str, 'use_dropout': bool, 'dropout_structure': [float, ...],
     'activate_output': bool, 'last_layer_dropout': bool, 'optional_info': str | None}

Keys a file lacks take A1111's defaults when loading (note ``activate_output`` defaults to True there), and
the oldest files' ``linear1.*``/``linear2.*`` names become ``linear.0.*``/``linear.1.*``. A1111 keeps the
optimizer's state in a separate ``NAME.pt.optim``; we neither read nor write it (training resumes from its own
checkpoint).

Our ``.safetensors`` holds the same: tensors named ``{width}.{0 for K | 1 for V}.{state-dict key}`` and each
option key above as JSON in the metadata.
"""
from __future__ import annotations

import json
import re
from pathlib import Path


from nanoldm.checkpoint.formats import (CheckpointError, load_pickle, read_tensors, write_a1111_pickle,
                                        write_safetensors)
from nanoldm.finetune.hypernetwork import Hypernetwork, HypernetworkOptions

__all__ = ["load_hypernetwork", "save_hypernetwork", "hypernetwork_to_dict", "hypernetwork_from_dict"]

OPTION_KEYS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name", "layer_structure", "activation_func",
               "is_layer_norm", "weight_initialization", "use_dropout", "dropout_structure", "activate_output",
               "last_layer_dropout", "optional_info")
_OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
             "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}
_TENSOR_KEY = re.compile(r"^(\d+)\.([01])\.(.+)$")


def save_hypernetwork(hypernetwork: Hypernetwork, path: str | Path) -> None:
    """Write A1111's ``.pt`` or our ``.safetensors``, chosen by the suffix; atomically."""
    path = Path(path)
    d = hypernetwork_to_dict(hypernetwork)
    if path.suffix.lower() == ".pt":
        write_a1111_pickle(path, d)
    elif path.suffix.lower() == ".safetensors":
        tensors = {f"{w}.{i}.{k}": v for w in hypernetwork.widths for i, sd in enumerate(d[w]) for k, v in sd.items()}
        write_safetensors(path, tensors, {k: json.dumps(d[k]) for k in OPTION_KEYS})
    else:
        raise CheckpointError(f"{path}: hypernetworks are written as .pt (A1111) or .safetensors")


def load_hypernetwork(path: str | Path) -> Hypernetwork:
    """A hypernetwork from A1111's ``.pt`` or our ``.safetensors``, in eval mode and frozen. Its name is the
    stored one, else the file's stem. Raises ``CheckpointError`` with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" if not path.exists() else f"{path}: is not a file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        d = _read_safetensors(path)
    elif suffix == ".pt":
        d = _read_pt(path)
    else:
        raise CheckpointError(f"{path}: unknown hypernetwork file type {suffix!r}; expected .pt or .safetensors")
    try:
        return hypernetwork_from_dict(d, default_name=path.stem)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a usable hypernetwork ({' '.join(str(e).split())[:300]})") from None


def hypernetwork_to_dict(hn: Hypernetwork) -> dict:
    """A1111's dict: width -> (state_dict_k, state_dict_v) on the CPU, then the options under A1111's keys."""
    o = hn.options
    d: dict = {w: tuple({k: v.detach().cpu().clone() for k, v in m.state_dict().items()} for m in hn.pair(w))
               for w in hn.widths}
    dropout = [float(p) for p in o.dropout]
    d.update({"step": int(hn.step), "name": hn.name, "layer_structure": [float(m) for m in o.layer_structure],
              "activation_func": o.activation_func, "is_layer_norm": bool(o.add_layer_norm),
              "weight_initialization": o.weight_init, "sd_checkpoint": hn.sd_checkpoint,
              "sd_checkpoint_name": hn.sd_checkpoint_name, "activate_output": bool(o.activate_output),
              "use_dropout": bool(o.use_dropout), "dropout_structure": dropout,
              "last_layer_dropout": len(dropout) > 1 and dropout[-2] != 0, "optional_info": hn.optional_info})
    return d


def hypernetwork_from_dict(d: dict, *, default_name: str = "") -> Hypernetwork:
    """Inverse of :func:`hypernetwork_to_dict`, filling missing options with A1111's loading defaults."""
    widths = [k for k in d if isinstance(k, int) and not isinstance(k, bool)]
    if not widths:
        raise ValueError("no integer context-width keys (is this an A1111 hypernetwork?)")
    dropout = d.get("dropout_structure")
    options = HypernetworkOptions(
        layer_structure=tuple(float(m) for m in d.get("layer_structure") or (1, 2, 1)),
        activation_func=d.get("activation_func"),
        weight_init=d.get("weight_initialization") or "Normal",
        add_layer_norm=bool(d.get("is_layer_norm", False)),
        use_dropout=bool(dropout and any(dropout)) or bool(d.get("use_dropout", False)),
        dropout_structure=None if dropout is None else tuple(float(p) for p in dropout),
        activate_output=bool(d.get("activate_output", True)),
        last_layer_dropout=bool(d.get("last_layer_dropout", False)))
    hn = Hypernetwork(widths, options, name=d.get("name") or default_name, step=int(d.get("step") or 0),
                      sd_checkpoint=d.get("sd_checkpoint"), sd_checkpoint_name=d.get("sd_checkpoint_name"),
                      optional_info=d.get("optional_info"), init=False)
    for w in widths:
        pair = d[w]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(sd, dict) for sd in pair):
            raise ValueError(f"width {w}: expected a pair of state dicts (K, V)")
        for module, sd in zip(hn.pair(w), pair):
            sd = {_OLD_KEYS.get(k, k): v for k, v in sd.items()}
            try:
                module.load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"width {w}: its weights do not fit the stored options ({e})") from None
    hn.eval()
    hn.requires_grad_(False)
    return hn


def _read_pt(path: Path) -> dict:
    obj = load_pickle(path, what="hypernetwork file")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not an A1111 hypernetwork dict")
    return obj


def _read_safetensors(path: Path) -> dict:
    tensors, metadata = read_tensors(path)
    d: dict = {}
    for key, value in metadata.items():
        if key in OPTION_KEYS:
            try:
                d[key] = json.loads(value)
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: metadata {key!r} is not JSON") from None
    pairs: dict[int, tuple[dict, dict]] = {}
    for name, tensor in tensors.items():
        m = _TENSOR_KEY.match(name)
        if m is None:
            raise CheckpointError(f"{path}: unexpected tensor {name!r} (expected WIDTH.0|1.KEY)")
        pairs.setdefault(int(m[1]), ({}, {}))[int(m[2])][m[3]] = tensor
    d.update(pairs)
    return d

"""Everything a training run needs to continue exactly where it stopped, in one ``.safetensors`` file.

Layout of ``OUT/checkpoint.safetensors`` (written atomically: temp file, fsync, rename; so the file on disk is
always one whole checkpoint, the last complete one):

==============================  ===============================================================
tensor name                     content
==============================  ===============================================================
``model.{module}.{key}``        each module's ``state_dict()`` (parameters and buffers)
``ema.{module}.{param}``        EMA shadow of each trainable parameter (float32), if EMA is on
``optim.{i}.{key}``             AdamW state of the i-th optimised parameter (step, exp_avg, ...)
``rng.torch``, ``rng.generator`` CPU torch RNG state; the trainer's own generator (loss noise)
``rng.cuda.{d}``                CUDA RNG state of device d, when CUDA is present
==============================  ===============================================================

The safetensors metadata holds one JSON string under ``nanoldm.training``: format version, step, examples
seen (the data position), the training config, the optimizer's param_groups, and the python and numpy RNG
states. Tensors and the state that goes with them live in one file, so they can never disagree.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nanoldm.checkpoint.formats import CheckpointError, read_tensors, write_safetensors

FORMAT = 1
META_KEY = "nanoldm.training"


@dataclass
class RngState:
    """A snapshot of every random stream training draws from."""
    python: tuple
    numpy: tuple
    torch: torch.Tensor
    generator: torch.Tensor
    cuda: list[torch.Tensor]

    @classmethod
    def capture(cls, generator: torch.Generator) -> "RngState":
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(), generator.get_state(), cuda)

    def restore(self, generator: torch.Generator) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        generator.set_state(self.generator)
        if self.cuda and torch.cuda.is_available() and len(self.cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(self.cuda)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"rng.torch": self.torch, "rng.generator": self.generator}
        out.update({f"rng.cuda.{d}": s for d, s in enumerate(self.cuda)})
        return out

    def to_json(self) -> dict:
        version, internal, gauss = self.python
        name, keys, pos, has_gauss, cached = self.numpy
        return {"python": [version, list(internal), gauss],
                "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], js: dict) -> "RngState":
        version, internal, gauss = js["python"]
        name, keys, pos, has_gauss, cached = js["numpy"]
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                           key=lambda k: int(k.rsplit(".", 1)[1]))]
        return cls((version, tuple(internal), gauss), (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached),
                   tensors["rng.torch"], tensors["rng.generator"], cuda)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The optimizer's per-parameter state as named tensors, and its param_groups as JSON-able dicts."""
    sd = optimizer.state_dict()
    tensors = {}
    for i, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    return tensors, json.loads(json.dumps(sd["param_groups"]))


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, i, key = name.split(".", 2)
            state.setdefault(int(i), {})[key] = t
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: Path, *, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                    ema: dict[str, torch.Tensor] | None, rng: RngState, meta: dict) -> None:
    """Atomically write one whole training state; ``meta`` is JSON-able (step, examples, config, ...)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"model.{name}.{k}": v for k, v in module.state_dict().items()})
    for name, t in (ema or {}).items():
        tensors[f"ema.{name}"] = t
    opt_tensors, groups = optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors.update(rng.tensors())
    payload = {"format": FORMAT, **meta, "param_groups": groups, "rng": rng.to_json()}
    write_safetensors(path, {k: v.detach().cpu() for k, v in tensors.items()}, {META_KEY: json.dumps(payload)})


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and the decoded JSON state of a training checkpoint; a clear error if it is not one."""
    tensors, metadata = read_tensors(path)
    if META_KEY not in metadata:
        raise CheckpointError(f"{path}: not a nanoldm training checkpoint (no '{META_KEY}' metadata)")
    meta = json.loads(metadata[META_KEY])
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: training checkpoint format {meta.get('format')}, expected {FORMAT}")
    return tensors, meta


def load_modules(path: Path, modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor]) -> None:
    """Load ``model.{module}.*`` tensors into the modules, naming what is missing."""
    for name, module in modules.items():
        prefix = f"model.{name}."
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(module.state_dict()) - set(sd))
        if missing:
            raise CheckpointError(f"{path}: module {name!r} lacks {missing[:5]} in the checkpoint")
        module.load_state_dict(sd)


def load_ema_weights(module: torch.nn.Module, name: str, checkpoint: Path) -> bool:
    """Copy the EMA shadow of ``modules()[name]`` from a training checkpoint into ``module`` (parameters only;
    buffers keep their values). Returns False when the checkpoint holds no EMA for it."""
    tensors, _ = read_checkpoint(checkpoint)
    prefix = f"ema.{name}."
    ema = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not ema:
        return False
    state = module.state_dict()
    state.update({k: v.to(state[k].dtype) for k, v in ema.items()})
    module.load_state_dict(state)
    return True

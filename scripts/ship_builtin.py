"""Ship a `nanoldm train all` run as the built-in model: its model in float16 as nanoldm/assets/shapes.safetensors,
and nanoldm/assets/shapes.json recording how it was made (command, seed, minutes per stage, machine, eval).

    .venv/bin/python scripts/ship_builtin.py runs/shapes "nanoldm train all --out runs/shapes"

The guidance scale the model draws best at (``ModelConfig.cfg_scale``, measured with ``nanoldm eval
--cfg-scale S``) is written into the shipped file's config, and so is the default of every command:

    .venv/bin/python scripts/ship_builtin.py --cfg-scale 4
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from nanoldm.builtin import BUILTIN_MODEL, PROVENANCE
from nanoldm.checkpoint.load import CONFIG_KEY
from nanoldm.cli.__main__ import main as nanoldm
from nanoldm.config import ModelConfig


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return f"{cpu}, {os.cpu_count()} cores"


def ship(run: Path, command: str) -> None:
    stages = [json.loads(line) for line in (run / "stages.jsonl").read_text().splitlines()]
    report = json.loads((run / "eval" / "report.json").read_text())
    if nanoldm(["convert", str(run / "model.safetensors"), str(BUILTIN_MODEL), "--to", "nanoldm", "--half",
                "--overwrite"]) != 0:
        sys.exit("conversion failed")
    record = {
        "command": command, "seed": 0, "machine": machine(),
        "minutes": round(sum(s["seconds"] for s in stages) / 60, 1),
        "stage_minutes": {s["stage"]: round(s["seconds"] / 60, 2) for s in stages},
        "commands": (run / "commands.txt").read_text().splitlines(),
        "eval": {"settings": report["settings"], "groups": report["groups"]},
        "storage": "float16",
    }
    PROVENANCE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {BUILTIN_MODEL} ({BUILTIN_MODEL.stat().st_size / 2**20:.1f} MB) and {PROVENANCE}")


def set_cfg_scale(path: Path, scale: float) -> None:
    """Rewrite ``path``'s config with ``cfg_scale = scale``; the tensors are kept as they are."""
    with safe_open(str(path), "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = dataclasses.replace(ModelConfig.from_json(metadata[CONFIG_KEY]), cfg_scale=scale)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={**metadata, CONFIG_KEY: config.to_json()})
    os.chmod(tmp, path.stat().st_mode)
    os.replace(tmp, path)
    record = json.loads(PROVENANCE.read_text())
    record["cfg_scale"] = scale
    PROVENANCE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{path}: default CFG scale {scale}")


if __name__ == "__main__":
    if sys.argv[1] == "--cfg-scale":
        set_cfg_scale(BUILTIN_MODEL, float(sys.argv[2]))
    else:
        ship(Path(sys.argv[1]), sys.argv[2])

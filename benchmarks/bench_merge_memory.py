"""Peak memory of ``nanoldm merge`` on SD 1.x-size checkpoints, against the size of one model.

Writes two SD_V1-topology checkpoints with random weights (our layout, float16 by default: 2.1 GB each; streamed,
so writing them holds one tensor at a time), and a rank-8 LoRA on every attention projection, then runs
``nanoldm merge A B --out C --alpha 0.3 --lora L:0.8`` as a child process under ``/usr/bin/time -v`` and prints
its maximum resident set size next to one model's file size.

    .venv/bin/python benchmarks/bench_merge_memory.py --dir /tmp/merge-bench          # float16 files
    .venv/bin/python benchmarks/bench_merge_memory.py --dir /tmp/merge-bench --dtype float32
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from nanoldm.checkpoint.formats import write_safetensors_streamed
from nanoldm.checkpoint.load import ADDED_TOKENS_KEY, CONFIG_KEY
from nanoldm.config import SD_V1
from nanoldm.finetune.lora_file import LoraModule, save_lora
from nanoldm.model import LatentDiffusion


def write_random_model(path: Path, dtype: torch.dtype, seed: int) -> None:
    shapes = {k: tuple(v.shape) for k, v in LatentDiffusion.from_config(SD_V1, device="meta").state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    tensors = ((k, (torch.randn(s, generator=g) * 0.02).to(dtype)) for k, s in shapes.items())
    write_safetensors_streamed(path, {k: (dtype, s) for k, s in shapes.items()}, tensors,
                               {CONFIG_KEY: SD_V1.to_json(), ADDED_TOKENS_KEY: "[]"})


def write_lora(path: Path, rank: int = 8) -> None:
    model = LatentDiffusion.from_config(SD_V1, device="meta")
    weights = {}
    for name, module in model.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            out, inp = module.weight.shape
            weights[f"unet.{name}"] = LoraModule(torch.randn(rank, inp) * 0.01, torch.randn(out, rank) * 0.01, 8.0)
    save_lora(path, weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/nanoldm-merge-bench")
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    a, b, lora, out = folder / "A.safetensors", folder / "B.safetensors", folder / "L.safetensors", folder / "C.safetensors"
    for seed, path in enumerate((a, b)):
        if not path.exists():
            write_random_model(path, dtype, seed)
    if not lora.exists():
        write_lora(lora)
    out.unlink(missing_ok=True)
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "nanoldm", "merge", str(a), str(b), "--out", str(out),
               "--alpha", "0.3", "--lora", f"{lora}:0.8"]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    if run.returncode != 0:
        sys.exit(run.stderr)
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    elapsed = re.search(r"Elapsed \(wall clock\) time.*: (\S+)", run.stderr).group(1)
    model_mb = a.stat().st_size / 2**20
    print(f"one model ({args.dtype}): {model_mb:8.0f} MiB   merge peak RSS: {peak_kb / 1024:8.0f} MiB   "
          f"ratio: {peak_kb / 1024 / model_mb:.2f}   wall: {elapsed}   output: {out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()

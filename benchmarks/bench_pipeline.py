"""Our txt2img pipeline against diffusers' StableDiffusionPipeline on the same tiny weights, sampler and steps,
and one classifier-free-guidance step of the SD_V1-size UNet (random weights, 512x512 = 64x64 latents).

    python benchmarks/bench_pipeline.py            # full run
    python benchmarks/bench_pipeline.py --quick    # smoke run
    python benchmarks/bench_pipeline.py --dtypes bfloat16   # only the bfloat16 rows

Both pipelines run in one process, alternately; rows quote medians, the ratio ours / diffusers and the spread.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import diffusers  # noqa: E402

from benchmarks.bench_networks import bench_peak_memory, machine, row, time_pair  # noqa: E402
from nanoldm.config import SHAPES_TINY  # noqa: E402
from nanoldm.pipelines.pipeline import load_pipeline, parse_dtype  # noqa: E402
from tests.reference import write_reference_folder  # noqa: E402

PROMPT, NEGATIVE = "a small red circle at the top left", "blurry"
SCHEDULERS = {"Euler": diffusers.EulerDiscreteScheduler, "DDIM": diffusers.DDIMScheduler,
              "DPM++ 2M": diffusers.DPMSolverMultistepScheduler}


def pipeline_pair(folder: Path, sampler: str, dtype: torch.dtype = torch.float32):
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype)
    theirs.scheduler = SCHEDULERS[sampler].from_config(theirs.scheduler.config)
    theirs.set_progress_bar_config(disable=True)
    return load_pipeline(folder, device="cpu", dtype=dtype), theirs


def bench_txt2img(folder: Path, sampler: str, batch: int, steps: int, size: int, repeats: int,
                  dtype: torch.dtype = torch.float32):
    ours, theirs = pipeline_pair(folder, sampler, dtype)
    run_ours = lambda: ours.txt2img(PROMPT, NEGATIVE, sampler=sampler, steps=steps, cfg_scale=7.0, seed=1,  # noqa: E731
                                    width=size, height=size, batch_size=batch, progress=False)
    run_theirs = lambda: theirs(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=7.0,  # noqa: E731
                                height=size, width=size, num_images_per_prompt=batch,
                                generator=[torch.Generator().manual_seed(1 + i) for i in range(batch)])
    ours_s, theirs_s = time_pair(run_ours, run_theirs, repeats)
    return [s / batch for s in ours_s], [s / batch for s in theirs_s]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--samplers", default=",".join(SCHEDULERS), help="txt2img rows for these samplers")
    p.add_argument("--no-sd", action="store_true", help="skip the SD_V1-size UNet rows")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="precisions of the txt2img rows, both pipelines in each (bfloat16 is fast where AMX exists)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    batch, steps = (4, 5) if args.quick else (16, 20)
    size = SHAPES_TINY.image_size

    print(machine(), end="\n\n")
    print("| benchmark | ours (median) | diffusers (median) | ours / diffusers | spread ours / diffusers |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        folder = Path(tmp) / "tiny"
        write_reference_folder(SHAPES_TINY, folder)
        for name in args.dtypes.split(","):
            for sampler in args.samplers.split(","):
                ours, theirs = bench_txt2img(folder, sampler, batch, steps, size, repeats, parse_dtype(name))
                print(row(f"txt2img {sampler}, {name}, SHAPES_TINY {size}x{size}, batch {batch}, CFG, {steps} steps,"
                          " s/image", ours, theirs, "s"), flush=True)
    args.child_batch = 2  # one CFG step: unconditional + conditional halves of one image
    for name in ([] if args.no_sd else args.dtypes.split(",")):
        args.child_dtype = str(parse_dtype(name)).removeprefix("torch.")
        ours_mb, ref_mb, ours_s, ref_s = bench_peak_memory(args, 2, 32 if args.quick else 64, 1 if args.quick else 3)
        print(row(f"SD_V1 UNet, one CFG step (batch 2), 64x64 latents, {name}, time", ours_s, ref_s, "s"))
        print(row(f"SD_V1 UNet, one CFG step, {name}, peak RSS growth", ours_mb, ref_mb, "MB"), flush=True)

if __name__ == "__main__":
    main()

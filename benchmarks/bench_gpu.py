"""On a CUDA GPU, in float16: our txt2img against diffusers' StableDiffusionPipeline with the SD_V1-size networks
(random weights, written once as a diffusers folder and loaded by both), 512x512, CFG, 50 steps, batch 1.

    python benchmarks/bench_gpu.py                 # needs a GPU, diffusers and transformers
    python benchmarks/bench_gpu.py --steps 20 --repeats 3

Both pipelines run alternately in one process after a warm-up each; the table quotes medians of whole calls
(text encoding, the sampling loop, VAE decode) as seconds and as sampling steps per second, with the ratio, then
how far apart the two images are (same seed, same Euler sampler: they should agree up to float16 rounding).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import diffusers  # noqa: E402

from nanoldm.config import SD_V1  # noqa: E402
from nanoldm.pipelines.pipeline import load_pipeline  # noqa: E402
from tests.reference import write_reference_folder  # noqa: E402

PROMPT, NEGATIVE = "a photo of an astronaut riding a horse on the moon", "blurry"


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--save", default=None, help="folder to save both images in")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    dtype = getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, diffusers {diffusers.__version__}, {args.dtype}\n")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        folder = Path(tmp) / "sd_v1_random"
        write_reference_folder(SD_V1, folder)
        theirs = diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to("cuda")
        theirs.scheduler = diffusers.EulerDiscreteScheduler.from_config(theirs.scheduler.config)
        theirs.set_progress_bar_config(disable=True)
        ours = load_pipeline(folder, device="cuda", dtype=dtype)
    settings = dict(steps=args.steps, size=args.size)
    run_ours = lambda: ours.txt2img(PROMPT, NEGATIVE, sampler="Euler", steps=settings["steps"], cfg_scale=7.0,  # noqa: E731
                                    seed=1, width=args.size, height=args.size, progress=False)
    run_theirs = lambda: theirs(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=settings["steps"],  # noqa: E731
                                guidance_scale=7.0, height=args.size, width=args.size,
                                generator=torch.Generator().manual_seed(1)).images
    a, b = run_ours()[0], run_theirs()[0]  # warm-up, and the images to compare
    if args.save:
        a.save(Path(args.save) / f"ours_{args.dtype}.png")
        b.save(Path(args.save) / f"diffusers_{args.dtype}.png")
    diff = np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))
    psnr = 10 * np.log10(255.0 ** 2 / max(float((diff ** 2).mean()), 1e-12))
    ours_s, theirs_s = [], []
    for _ in range(args.repeats):
        ours_s.append(timed(run_ours))
        theirs_s.append(timed(run_theirs))
    mo, mt = statistics.median(ours_s), statistics.median(theirs_s)
    print("| benchmark | ours | diffusers | ours / diffusers |")
    print("|---|---:|---:|---:|")
    print(f"| SD_V1 txt2img {args.size}x{args.size}, Euler, CFG 7, {args.steps} steps, {args.dtype}: s/image | {mo:.3f} | "
          f"{mt:.3f} | {mo / mt:.2f} |")
    print(f"| same, sampling steps per second | {args.steps / mo:.2f} | {args.steps / mt:.2f} | {mt / mo:.2f} |")
    print(f"| peak GPU memory (both pipelines loaded) | {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB | | |")
    print(f"\nsame seed, ours vs diffusers: max abs pixel difference {diff.max():.0f}/255, PSNR {psnr:.1f} dB")


if __name__ == "__main__":
    main()

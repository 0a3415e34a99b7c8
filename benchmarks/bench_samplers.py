"""The samplers' own cost: for each sampler, a 20-step txt2img of the built-in model, split into the time inside
the UNet and the rest of the sampling loop (the sampler's arithmetic, the Denoiser's scalings, CFG, Brownian-tree
queries), as a share of the whole txt2img call (text encoding and VAE decoding included). The issue asks for
< 2%. Then the DPM++ 2M SDE row: ours (A1111 conventions, Brownian tree) against diffusers' SDE-DPM-Solver++ 2M
(``DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")``) on the same tiny weights, alternated.

    python benchmarks/bench_samplers.py            # every A1111 sampler, 5 repeats
    python benchmarks/bench_samplers.py --quick    # a few samplers, 2 repeats
    python benchmarks/bench_samplers.py --comfyui  # also every ComfyUI sampler (like="comfyui")
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import diffusers  # noqa: E402

from benchmarks.bench_networks import machine, row, time_pair  # noqa: E402
import nanoldm.pipelines.txt2img as txt2img_module  # noqa: E402  (its sample_latents is wrapped to time it)
from nanoldm.config import SHAPES_TINY  # noqa: E402
from nanoldm.pipelines.pipeline import load_pipeline  # noqa: E402
from nanoldm.samplers.a1111 import A1111_SAMPLER_NAMES  # noqa: E402
from nanoldm.samplers.a1111_timesteps import A1111_TIMESTEP_SAMPLERS  # noqa: E402
from nanoldm.samplers.comfyui import COMFYUI_SAMPLERS  # noqa: E402
from tests.reference import write_reference_folder  # noqa: E402

PROMPT, NEGATIVE = "a small red circle at the top left", "blurry"


class UNetClock:
    """Accumulates wall time spent inside ``module``'s forward (pre- and post-forward hooks)."""

    def __init__(self, module: torch.nn.Module):
        self.total, self._start = 0.0, None
        module.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        module.register_forward_hook(lambda *_: setattr(self, "total", self.total + time.perf_counter() - self._start))


def sampler_overhead(samplers, repeats: int, steps: int = 20, batch: int = 4, like: str = "a1111"):
    """Rows: sampler, seconds per txt2img call, sampler's own share (median over repeats), under ``like``'s
    conventions (ComfyUI's names with like="comfyui")."""
    pipe = load_pipeline(None, device="cpu")
    clock = UNetClock(pipe.model.unet)
    sample_clock = {"t": 0.0}
    inner = txt2img_module.sample_latents

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sample_clock["t"] += time.perf_counter() - start

    txt2img_module.sample_latents = timed
    rows = []
    for name in samplers:
        totals, own = [], []
        for i in range(repeats + 1):
            clock.total, sample_clock["t"] = 0.0, 0.0
            start = time.perf_counter()
            pipe.txt2img(PROMPT, NEGATIVE, sampler=name, steps=steps, seed=1, batch_size=batch, like=like,
                         progress=False)
            total = time.perf_counter() - start
            if i:  # the first run warms up
                totals.append(total)
                own.append((sample_clock["t"] - clock.total) / total)
        rows.append((name, statistics.median(totals), statistics.median(own)))
    txt2img_module.sample_latents = inner
    return rows


def bench_dpmpp_2m_sde(repeats: int, steps: int = 20, batch: int = 8, size: int = 32):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny"
        torch.manual_seed(0)
        write_reference_folder(SHAPES_TINY, folder)
        theirs = diffusers.StableDiffusionPipeline.from_pretrained(folder)
        theirs.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
            theirs.scheduler.config, algorithm_type="sde-dpmsolver++", solver_order=2)
        theirs.set_progress_bar_config(disable=True)
        ours = load_pipeline(folder, device="cpu")
        run_ours = lambda: ours.txt2img(PROMPT, NEGATIVE, sampler="DPM++ 2M SDE", steps=steps, seed=1,  # noqa: E731
                                        width=size, height=size, batch_size=batch, progress=False)
        run_theirs = lambda: theirs(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps,  # noqa: E731
                                    height=size, width=size, num_images_per_prompt=batch,
                                    generator=[torch.Generator().manual_seed(1 + i) for i in range(batch)])
        return time_pair(run_ours, run_theirs, repeats)


def brownian_query_ms(steps: int = 20, repeats: int = 3) -> float:
    """Milliseconds per Brownian-tree query of one image at SD 1.x's 512x512 latent size (4 x 64 x 64), over an
    A1111 20-step Exponential schedule: the SDE samplers' cost per step and image, whatever the UNet."""
    from nanoldm.config import ScheduleConfig
    from nanoldm.diffusion.schedule import NoiseSchedule
    from nanoldm.samplers.brownian import BrownianNoise
    from nanoldm.samplers.schedules import SCHEDULES

    sigmas = SCHEDULES["Exponential"](NoiseSchedule.from_config(ScheduleConfig()), steps)
    times = []
    for seed in range(repeats):
        noise = BrownianNoise((1, 4, 64, 64), sigmas[sigmas > 0].min(), sigmas.max(), [seed])
        start = time.perf_counter()
        for i in range(steps - 1):
            noise(sigmas[i], sigmas[i + 1])
        times.append((time.perf_counter() - start) / (steps - 1))
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--comfyui", action="store_true", help="also ComfyUI's samplers (like='comfyui')")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else args.repeats
    print(machine())
    samplers = (("Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 3M SDE") if args.quick
                else [*A1111_SAMPLER_NAMES, *A1111_TIMESTEP_SAMPLERS])
    print("\nbuilt-in model, 20 steps, batch 4: the sampler's own time (sampling loop minus UNet) per txt2img call")
    print(f"{'sampler':<20} {'s/call':>8} {'own share':>10}")
    groups = [("a1111", samplers)] + ([("comfyui", list(COMFYUI_SAMPLERS))] if args.comfyui else [])
    for like, names in groups:
        for name, seconds, share in sampler_overhead(names, repeats, like=like):
            print(f"{name:<20} {seconds:8.3f} {100 * share:9.2f}%  {'ok' if share < 0.02 else 'OVER 2%'}")
    print(f"\nBrownian tree, one image at 4x64x64 (SD 1.x 512x512): {brownian_query_ms():.1f} ms per query (step)")
    print("\nDPM++ 2M SDE, SHAPES_TINY weights, 32x32, batch 8, 20 steps: ours vs diffusers (sde-dpmsolver++)")
    ours_s, theirs_s = bench_dpmpp_2m_sde(repeats)
    print("| row | ours | diffusers | ours/diffusers | spread |\n|---|---|---|---|---|")
    print(row("txt2img DPM++ 2M SDE, batch 8, 20 steps (per call)", ours_s, theirs_s, "s"))


if __name__ == "__main__":
    main()

"""Our UNet and VAE against diffusers' on the CPU: speed (same weights, same inputs) and peak memory.

    python benchmarks/bench_networks.py            # full run (several minutes)
    python benchmarks/bench_networks.py --quick    # smoke run

Timings on a shared machine drift, so the two implementations run alternately in one process (who goes
first alternates too) and every row quotes medians. Peak memory is the growth of the peak RSS during one
forward, measured in a fresh subprocess per implementation so neither sees the other's allocations.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

import diffusers  # noqa: E402

from nanoldm.autoencoder.autoencoder import AutoencoderKL  # noqa: E402
from nanoldm.config import SD_V1, SHAPES_TINY, UNetConfig  # noqa: E402
from nanoldm.layers.frozen import frozen_weights  # noqa: E402
from nanoldm.unet.unet import UNet  # noqa: E402
from tests.reference import reference_unet, reference_vae  # noqa: E402  (the hand-built diffusers models)


def unet_pair(cfg: UNetConfig):
    """(ours, diffusers') with the same random weights, in eval mode."""
    ref = reference_unet(cfg)
    ours = UNet(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def unet_inputs(cfg: UNetConfig, batch: int, size: int):
    x = torch.randn(batch, cfg.in_channels, size, size)
    t = torch.randint(0, 1000, (batch,))
    return x, t, torch.randn(batch, 77, cfg.context_dim)


# --- timing --------------------------------------------------------------------------------------------

def time_pair(ours, theirs, repeats: int, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per run of two callables, run alternately (and alternating who goes first)."""
    for _ in range(warmup):
        ours(), theirs()
    times = {ours: [], theirs: []}
    for i in range(repeats):
        for fn in ((ours, theirs) if i % 2 == 0 else (theirs, ours)):
            start = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - start)
    return times[ours], times[theirs]


def bench_unet_forward(cfg, batch, size, repeats):
    ours, ref = unet_pair(cfg)
    x, t, ctx = unet_inputs(cfg, batch, size)
    with frozen_weights():  # as our sampler runs it (both sides: no gradients)
        torch.testing.assert_close(ours(x, t, ctx), ref(x, t, ctx).sample, atol=1e-4, rtol=1e-4)
        return time_pair(lambda: ours(x, t, ctx), lambda: ref(x, t, ctx, return_dict=False)[0], repeats)


def train_step(opt, call, target):
    opt.zero_grad(set_to_none=True)
    F.mse_loss(call(), target).backward()
    opt.step()


def bench_unet_train(cfg, batch, size, repeats, fused_ours: bool = False):
    """``fused_ours``: our side steps the fused AdamW our training loop uses; diffusers' side keeps the for-each
    AdamW its training scripts use. Without it both use the for-each one (the networks alone compared)."""
    ours, ref = (m.train() for m in unet_pair(cfg))
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=fused_ours)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    x, t, ctx = unet_inputs(cfg, batch, size)
    target = torch.randn_like(x)
    return time_pair(lambda: train_step(opt_ours, lambda: ours(x, t, ctx), target),
                     lambda: train_step(opt_ref, lambda: ref(x, t, ctx, return_dict=False)[0], target), repeats)


def bench_vae(cfg, batch, size, repeats):
    ref = reference_vae(cfg)
    ours = AutoencoderKL(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.rand(batch, cfg.in_channels, size, size) * 2 - 1
    with frozen_weights():
        torch.testing.assert_close(ours.decode(ours.encode(x).mode()),
                                   ref.decode(ref.encode(x).latent_dist.mode()).sample, atol=1e-4, rtol=1e-4)
        return time_pair(lambda: ours.decode(ours.encode(x).mode()),
                         lambda: ref.decode(ref.encode(x).latent_dist.mode()).sample, repeats)


# --- peak memory (in a child process) ------------------------------------------------------------------

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reset_peak_rss() -> None:
    """Lower the high-water mark to the current RSS (Linux >= 4.0), so model building's transients don't hide
    the forward's peak. Harmless where unsupported: the measurement is then a lower bound."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_child(which: str, batch: int, size: int, dtype: str = "float32") -> None:
    """Build one SD-size UNet, run one no-grad forward, print {"mb": peak growth, "s": its time} as JSON."""
    cfg, dtype = SD_V1.unet, getattr(torch, dtype)
    torch.manual_seed(0)
    model = (UNet(cfg) if which == "ours" else reference_unet(cfg)).eval().to(dtype)
    x, t, ctx = unet_inputs(cfg, batch, size)
    x, ctx = x.to(dtype), ctx.to(dtype)
    call = (lambda: model(x, t, ctx)) if which == "ours" else (lambda: model(x, t, ctx, return_dict=False)[0])
    reset_peak_rss()
    before = peak_rss_mb()
    with frozen_weights():
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
    print(json.dumps({"mb": peak_rss_mb() - before, "s": seconds}))


def measure_peak_memory(which: str, args, batch: int, size: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--peak-memory-child", which, "--threads", str(args.threads),
           "--child-batch", str(batch), "--child-size", str(size),
           "--child-dtype", getattr(args, "child_dtype", "float32")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_peak_memory(args, batch, size, repeats):
    """Alternating fresh children: lists of peak growth (MB) and of forward time (s), per implementation."""
    runs = {"ours": [], "diffusers": []}
    for i in range(repeats):
        for which in (("ours", "diffusers") if i % 2 == 0 else ("diffusers", "ours")):
            runs[which].append(measure_peak_memory(which, args, batch, size))
    return ([r["mb"] for r in runs["ours"]], [r["mb"] for r in runs["diffusers"]],
            [r["s"] for r in runs["ours"]], [r["s"] for r in runs["diffusers"]])


# --- report --------------------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"CPU: {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}; 1-min load {load()}")


def row(name: str, ours: list[float], theirs: list[float], unit: str) -> str:
    """Medians, their ratio, and the spread (slowest / fastest run): a large spread flags a disturbed row."""
    fmt = (lambda v: f"{v * 1e3:.1f} ms") if unit == "s" else (lambda v: f"{v:.0f} MB")
    mo, mt = statistics.median(ours), statistics.median(theirs)
    spread = " / ".join(f"{max(v) / min(v):.2f}" if min(v) > 0 else "-" for v in (ours, theirs))
    return f"| {name} | {fmt(mo)} | {fmt(mt)} | {mo / mt:.2f} | {spread} |"


def load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small batches and few repeats: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per implementation (default 10, quick 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--peak-memory-child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    p.add_argument("--child-batch", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--child-size", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--child-dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak_memory_child:
        return peak_memory_child(args.peak_memory_child, args.child_batch, args.child_size, args.child_dtype)

    torch.manual_seed(0)
    repeats = args.repeats or (3 if args.quick else 10)
    batch = 8 if args.quick else 64
    sd_batch, sd_size = (1, 32) if args.quick else (2, 64)
    unet_cfg, vae_cfg = SHAPES_TINY.unet, SHAPES_TINY.vae
    latent = 32 // vae_cfg.downsample_factor

    print(machine(), end="\n\n")
    print("| benchmark | ours (median) | diffusers (median) | ours / diffusers | spread ours / diffusers |")
    print("|---|---:|---:|---:|---:|")
    print(row(f"UNet forward, tiny, {latent}x{latent} latents, batch {batch}, inference",
              *bench_unet_forward(unet_cfg, batch, latent, repeats), "s"), flush=True)
    print(row(f"UNet fwd+bwd+AdamW, tiny, batch {batch}, train, the same AdamW",
              *bench_unet_train(unet_cfg, batch, latent, repeats), "s"), flush=True)
    print(row(f"UNet fwd+bwd+AdamW, tiny, batch {batch}, train, ours with our loop's fused AdamW",
              *bench_unet_train(unet_cfg, batch, latent, repeats, fused_ours=True), "s"), flush=True)
    print(row(f"VAE encode+decode, tiny, 32x32 images, batch {batch}", *bench_vae(vae_cfg, batch, 32, repeats), "s"),
          flush=True)
    mem_repeats = 1 if args.quick else 3
    ours_mb, ref_mb, ours_s, ref_s = bench_peak_memory(args, sd_batch, sd_size, mem_repeats)
    print(row(f"SD_V1 UNet forward peak RSS growth, {sd_size}x{sd_size}, batch {sd_batch}, fp32", ours_mb, ref_mb,
              "MB"))
    print(row("SD_V1 UNet forward time (same runs, first call in a fresh process)", ours_s, ref_s, "s"))
    print(f"\n1-min load at the end: {load()} (a load well above the thread count means others shared the CPU)")

if __name__ == "__main__":
    main()

"""The API's answers in A1111's shapes: the ``info`` JSON of a generation (A1111's ``Processed.js()``), the
progress state, PNG info and memory figures. Plain functions of the service's state; no HTTP here."""
from __future__ import annotations

import json
import os
import resource
import sys
import time

import torch
from PIL import Image

from nanoldm.pipelines.infotext import PNG_KEY, parse_infotext
from nanoldm.pipelines.progress import SamplingMonitor
from nanoldm.server.codec import encode_png
from nanoldm.server.service import Job

VERSION = "nanoldm"


def generation_info(job: Job, images: list[Image.Image], model_name: str, model_hash: str | None,
                    styles: list[str] | None = None) -> str:
    """A1111's ``info`` string: the job's settings, every image's seed and infotext."""
    opts = job.opts
    seeds = [image.info["seed"] for image in images]
    count = len(images)
    return json.dumps({
        "prompt": opts.prompt, "all_prompts": [opts.prompt] * count,
        "negative_prompt": opts.negative_prompt, "all_negative_prompts": [opts.negative_prompt] * count,
        "seed": opts.seed, "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * count, "subseed_strength": 0,
        "width": opts.width, "height": opts.height, "sampler_name": opts.sampler, "cfg_scale": opts.cfg_scale,
        "steps": opts.steps, "batch_size": opts.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": model_name, "sd_model_hash": model_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": opts.strength if job.kind == "img2img" else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [image.info[PNG_KEY] for image in images], "styles": styles or [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": opts.clip_skip,
        "is_using_inpainting_conditioning": job.mask is not None, "version": VERSION,
    })


def progress_state(monitor: SamplingMonitor | None, job_kind: str, *, with_image: bool) -> dict:
    """``/sdapi/v1/progress``: share done, seconds left, A1111's state dict, the latest x0 preview (base64 PNG).
    Asking for the image asks the running job for a fresh preview at its next step."""
    snap = monitor.snapshot() if monitor is not None else None
    active = snap is not None and snap.active
    state = {"skipped": bool(snap and snap.skipped), "interrupted": bool(snap and snap.interrupted),
             "stopping_generation": False, "job": job_kind if active else "", "job_count": snap.runs if active else 0,
             "job_timestamp": "0", "job_no": snap.run if active else 0,
             "sampling_step": snap.step if active else 0, "sampling_steps": snap.steps if active else 0}
    if not active:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    fraction = snap.fraction
    eta = snap.elapsed / fraction - snap.elapsed if fraction > 0 else 0.0
    image = None
    if with_image:
        monitor.want_preview()
        image = encode_png(monitor.preview) if monitor.preview is not None else None
    text = f"Sampling step {snap.step}/{snap.steps}" + (f", batch {snap.run + 1}/{snap.runs}" if snap.runs > 1 else "")
    return {"progress": fraction, "eta_relative": eta, "state": state, "current_image": image, "textinfo": text}


def png_info(image: Image.Image) -> dict:
    """``/sdapi/v1/png-info``: the infotext, the other text chunks, and the infotext parsed."""
    text = image.info.get(PNG_KEY)
    text = text if isinstance(text, str) else ""
    items = {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str) and k != PNG_KEY}
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


def memory() -> dict:
    """A1111's ``/sdapi/v1/memory``: ``ram.used`` is this process's resident memory; ``cuda`` the device's."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = page * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
    except OSError:  # not Linux: the peak instead (kilobytes on Linux and BSD, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak if sys.platform == "darwin" else peak * 1024
    ram = {"free": total - rss, "used": rss, "total": total}
    if not torch.cuda.is_available():
        return {"ram": ram, "cuda": {"error": "unavailable"}}
    free, device_total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    return {"ram": ram, "cuda": {
        "system": {"free": free, "used": device_total - free, "total": device_total},
        "active": pair("active_bytes"), "allocated": pair("allocated_bytes"), "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}}}

"""``GET /nanoldm/v1/defaults``: what the web page starts its fields with (the loaded model's native size, the
library's generation defaults), so a new user's first Generate makes a sensible picture."""
from __future__ import annotations

from fastapi import APIRouter, Request

from nanoldm.options import GenerateOptions
from nanoldm.samplers import get_sampler
from nanoldm.server.routes import service_of

router = APIRouter(prefix="/nanoldm/v1")


@router.get("/defaults")
def defaults(request: Request) -> dict:
    service = service_of(request)
    size, opts = service.pipe.model.config.image_size, GenerateOptions()
    return {"width": size, "height": size, "size_step": service.pipe.latent_factor,
            "max_size": service.settings.max_size, "sampler_name": get_sampler(opts.sampler).name,
            "steps": opts.steps, "cfg_scale": service.pipe.model.config.default_cfg_scale,
            "batch_size": opts.batch_size,
            "denoising_strength": opts.strength, "model": service.checkpoint.title}

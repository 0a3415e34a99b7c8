"""A1111's sampler and schedule-type lists (``/sdapi/v1/samplers``, ``/schedulers``) over nanoldm's samplers.

Since A1111 1.9 a request names a sampler ("DPM++ 2M") and a schedule type ("karras") apart; the older combined
names ("DPM++ 2M Karras") still work. Both are ``GenerateOptions`` fields (``sampler``, ``scheduler``), checked by
``options.check_sampler``; A1111's k-diffusion list comes first, then its own DDIM, PLMS and UniPC, then the
samplers only the registry has (DDPM).
"""
from __future__ import annotations

from nanoldm.samplers import SAMPLERS
from nanoldm.samplers.a1111 import A1111_SAMPLERS
from nanoldm.samplers.a1111_timesteps import A1111_TIMESTEP_SAMPLERS
from nanoldm.samplers.schedules import SCHEDULE_NAMES

RHO = {"Karras": 7.0, "Polyexponential": 1.0}  # the schedule types with a rho, and A1111's defaults


def sampler_items() -> list[dict]:
    """``/sdapi/v1/samplers``: name, aliases, options (the schedule type "Automatic" means for it)."""
    items = [{"name": s.name, "aliases": list(s.aliases),
              "options": {"scheduler": scheduler_name(s.scheduler)} if s.scheduler else {}}
             for s in A1111_SAMPLERS.values()]
    items += [{"name": name, "aliases": [name.lower()], "options": {}} for name in A1111_TIMESTEP_SAMPLERS]
    listed = {item["name"] for item in items}
    return items + [{"name": spec.name, "aliases": [spec.id], "options": {}}
                    for spec in SAMPLERS.values() if spec.name not in listed and " " not in spec.name]


def scheduler_items() -> list[dict]:
    """``/sdapi/v1/schedulers``: A1111's schedule types, by snake_case name and label."""
    return [{"name": scheduler_name(label), "label": label, "aliases": None, "default_rho": RHO.get(label, -1),
             "need_inner_model": False} for label in SCHEDULE_NAMES]


def scheduler_name(label: str) -> str:
    """A1111's API name of a schedule type: "SGM Uniform" -> "sgm_uniform"."""
    return label.lower().replace(" ", "_")

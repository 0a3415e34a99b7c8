"""A1111's sampler and scheduler names over nanoldm's sampler registry, as it is.

Since A1111 1.9 a request names a sampler ("DPM++ 2M") and a schedule type ("Karras") apart; the older combined
names ("DPM++ 2M Karras") still work. The registry holds the combined names, so ``"automatic"`` (or none) keeps
the sampler's own schedule and a schedule type is accepted where the registry has the combination.
"""
from __future__ import annotations

from nanoldm.samplers import SAMPLERS, get_sampler

AUTOMATIC = "automatic"
KARRAS = "karras"


def sampler_items() -> list[dict]:
    """``/sdapi/v1/samplers``: name, aliases (the snake_case id), options (the schedule a name implies)."""
    return [{"name": spec.name, "aliases": [spec.id],
             "options": {"scheduler": KARRAS} if spec.name.endswith(" Karras") else {}}
            for spec in SAMPLERS.values()]


def scheduler_items() -> list[dict]:
    """``/sdapi/v1/schedulers``: the schedule types some sampler of the registry has."""
    items = [{"name": AUTOMATIC, "label": "Automatic", "aliases": None, "default_rho": -1, "need_inner_model": False}]
    if any(name.endswith(" Karras") for name in SAMPLERS):
        items.append({"name": KARRAS, "label": "Karras", "aliases": None, "default_rho": 7.0,
                      "need_inner_model": False})
    return items


def resolve_sampler(sampler: str, scheduler: str | None) -> str:
    """The registry name of ``sampler`` under ``scheduler``; ValueError naming the valid choices."""
    name = get_sampler(sampler).name  # an unknown sampler lists the valid ones
    kind = (scheduler or AUTOMATIC).strip().lower()
    if kind == AUTOMATIC or (kind == KARRAS and name.endswith(" Karras")):
        return name
    if kind == KARRAS and f"{name} Karras" in SAMPLERS:
        return f"{name} Karras"
    valid = ", ".join(item["name"] for item in scheduler_items())
    raise ValueError(f"scheduler {scheduler!r} is not available for sampler {name!r}; schedulers: {valid} "
                     f"(karras only with {', '.join(n[:-7] for n in SAMPLERS if n.endswith(' Karras'))})")

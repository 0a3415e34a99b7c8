"""Prompt following of a shapes-world model, as ``nanoldm eval`` and the eval stage of ``train all`` run it:
:func:`evaluate_prompt_following` generates and judges the prompts and prints the table; :func:`write_report`
writes ``report.json`` (the settings, the table, every prompt with its verdicts) and one PNG grid per group."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from nanoldm.data.shapes import DEFAULT_HELD_OUT
from nanoldm.data.vocabulary import parse_combinations, parse_names
from nanoldm.evaluation.prompt_following import eval_prompts, evaluate, format_table
from nanoldm.pipelines.images import image_grid
from nanoldm.pipelines.pipeline import Pipeline

DEFAULT_HELD_OUT_TEXT = ", ".join(f"{c} {s}" for c, s in sorted(DEFAULT_HELD_OUT))


@dataclass(frozen=True)
class EvalSettings:
    """What report.json records under "settings" (in this order): the model, how it samples, what is judged."""
    model: str | None = None
    sampler: str = "Euler a"
    steps: int = 20
    cfg_scale: float | None = None  # None: the model's own (ModelConfig.default_cfg_scale)
    seed: int = 0
    held_out: str = DEFAULT_HELD_OUT_TEXT  # "colour shape, ..." never seen in training
    concept: str | None = None             # also score one-object prompts of this shape, named by ``token``
    concept_sizes: str = ""
    token: str | None = None
    embeddings: str | None = None
    hypernetwork: list[str] = field(default_factory=list)
    hypernetwork_strength: float = 1.0
    style: str | None = None


@dataclass(frozen=True)
class PromptCounts:
    """How many prompts of each group (``eval_prompts``' counts)."""
    singles: int = 96
    pairs: int = 64
    partials: int = 96
    held_out: int = 48
    concept: int = 48


def evaluate_prompt_following(pipe: Pipeline, settings: EvalSettings, counts: PromptCounts, *,
                              extra_shapes: tuple[str, ...] = (), batch_size: int = 32) -> dict:
    """Generate every prompt with ``pipe`` as it is (embeddings and hypernetworks the caller loaded included),
    judge it (reading ``extra_shapes`` and the concept's shape too), print the table. Returns ``evaluate``'s
    report."""
    judged = extra_shapes + ((settings.concept,) if settings.concept and settings.concept not in extra_shapes else ())
    size = pipe.model.config.image_size
    prompts = eval_prompts(singles=counts.singles, pairs=counts.pairs, held_out=parse_combinations(settings.held_out),
                           held_out_count=counts.held_out, extra_shapes=extra_shapes, concept=settings.concept,
                           token=settings.token, concept_count=counts.concept,
                           concept_sizes=parse_names(settings.concept_sizes), size=32 if size <= 32 else 64,
                           partials=counts.partials)
    if not prompts:
        raise ValueError("no prompts to evaluate: every group has a count of 0")
    report = evaluate(pipe, prompts, seed=settings.seed, batch_size=batch_size, extra_shapes=judged,
                      style=settings.style, sampler=settings.sampler, steps=settings.steps,
                      cfg_scale=settings.cfg_scale)
    print(format_table(report["groups"]))
    return report


def write_report(report: dict, settings: EvalSettings, out: Path) -> None:
    """``out/report.json`` and ``out/GROUP.png`` (16 images a row, in the report's order)."""
    out.mkdir(parents=True, exist_ok=True)
    per_image = [{"prompt": p.prompt, "judged_as": p.caption, "group": p.group, "all_correct": s["all_correct"],
                  **{k: v for k, v in s.items() if isinstance(v, bool)}} for p, _, s in report["images"]]
    (out / "report.json").write_text(json.dumps({"settings": dataclasses.asdict(settings), "groups": report["groups"],
                                                 "images": per_image}, indent=1))
    for group in report["groups"]:
        images = [im for p, im, _ in report["images"] if p.group == group]
        image_grid(images, columns=16).save(out / f"{group}.png")
    print(f"report: {out / 'report.json'}")

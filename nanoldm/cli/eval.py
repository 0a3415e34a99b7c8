"""``nanoldm eval``: how well a text-conditioned model follows shapes-world prompts, scored by the judge.

Prints one row per prompt group (single object, two objects, held-out combinations) with the share of images
right on each attribute and on all of them; with ``--out`` also writes ``report.json`` (settings, the table,
every prompt with its verdicts) and one PNG grid per group, in the report's order.

Imports are at the top: ``import nanoldm`` already loads the pipeline (and torch), so importing them lazily
would not make ``nanoldm --help`` faster."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from nanoldm.checkpoint.formats import check_folder
from nanoldm.checkpoint.parts import load_condition
from nanoldm.cli.generate import add_dtype_argument
from nanoldm.cli.sampling_args import add_sampling_arguments, generate_options
from nanoldm.conditioning import ClassEmbedding
from nanoldm.data.vocabulary import STYLES
from nanoldm.evaluation import conditions
from nanoldm.evaluation.report import (DEFAULT_HELD_OUT_TEXT, EvalSettings, PromptCounts, evaluate_prompt_following,
                                       write_report)
from nanoldm.finetune.textual_inversion import load_embeddings
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.pipeline import Pipeline, load_pipeline
from nanoldm.rng import resolve_seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="prompt-following accuracy on the shapes world (per attribute and group)")
    p.add_argument("--model", default=None, help="a shapes-world model (default: the built-in one)")
    p.add_argument("--singles", type=int, default=96, help="one-object prompts (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=64, help="two-object prompts (default: %(default)s)")
    p.add_argument("--partials", type=int, default=96,
                   help="one-object prompts leaving out the size, the position or both ('a red circle'; default: "
                        "%(default)s)")
    p.add_argument("--held-out", default=DEFAULT_HELD_OUT_TEXT,
                   help="combinations the model never saw in training (default: the built-in model's); '' for none")
    p.add_argument("--held-out-count", type=int, default=48, help="prompts per held-out group (default: %(default)s)")
    p.add_argument("--extra-shapes", default="", help="star and/or heart, if the model was trained with them")
    p.add_argument("--concept", default=None, choices=("star", "heart"),
                   help="also score one-object prompts of this shape, named by --token (default: 'shape')")
    p.add_argument("--token", default=None, help="the learned word for --concept, e.g. '<star>'")
    p.add_argument("--concept-count", type=int, default=48, help="concept prompts (default: %(default)s)")
    p.add_argument("--concept-sizes", default="",
                   help="only these sizes in the concept prompts, e.g. 'large' (default: every size)")
    p.add_argument("--embeddings", default=None, metavar="PATH",
                   help="textual-inversion embeddings: a folder (A1111's: each file's stem is its token), or one file "
                        "loaded under --token")
    p.add_argument("--hypernetwork", action="append", default=[], metavar="PATH", help="hypernetwork(s) to apply")
    p.add_argument("--hypernetwork-strength", type=float, default=1.0, help="default: %(default)s")
    p.add_argument("--lora", action="append", default=[], metavar="PATH", help="LoRA file(s) to apply (kohya / PEFT)")
    p.add_argument("--lora-weight", type=float, default=1.0,
                   help="their weight (0: the model without them; default: %(default)s)")
    p.add_argument("--style", default=None, choices=tuple(STYLES),
                   help="also report the share of images drawn in this style (e.g. what a hypernetwork learned)")
    p.add_argument("--condition", default=None, metavar="PATH",
                   help="a class or layout model's condition.safetensors: judge classes / boxes instead of prompts")
    add_sampling_arguments(p, seed=0, batch_size=None)  # a fixed seed: a report must be reproducible
    p.add_argument("--batch-size", type=int, default=32, help="prompts sampled together (default: %(default)s)")
    p.add_argument("--device", default=None)
    add_dtype_argument(p)
    p.add_argument("--out", default=None, help="folder for report.json and the image grids")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    extra = tuple(s.strip() for s in args.extra_shapes.split(",") if s.strip())
    if args.token and not args.concept:
        raise ValueError("--token names a learned word for --concept: give --concept too")
    if args.out:
        check_folder(args.out)  # before the work, not after it
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    if args.cfg_scale is None:  # the model's own scale, which the report then records
        args.cfg_scale = pipe.model.config.default_cfg_scale
    args.seed = resolve_seed(args.seed)  # -1 picks one, which the report then records
    if args.condition or pipe.parts().concat_channels:
        return run_conditions(pipe, args, generate_options(args))
    if args.embeddings:
        load_embeddings(pipe.model, args.embeddings, token=args.token if Path(args.embeddings).is_file() else None)
    for path in args.hypernetwork:
        pipe.load_hypernetwork(path, args.hypernetwork_strength)
    for path in args.lora:
        pipe.load_lora(path, args.lora_weight)
    settings = EvalSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalSettings)})
    counts = PromptCounts(singles=args.singles, pairs=args.pairs, partials=args.partials,
                          held_out=args.held_out_count, concept=args.concept_count)
    report = evaluate_prompt_following(pipe, settings, counts, extra_shapes=extra, batch_size=args.batch_size)
    if args.out:
        write_report(report, settings, Path(args.out))
    _say_where(args.out)
    return 0


def _say_where(out: str | None) -> None:
    print(f"report: {Path(out) / 'report.json'}" if out else "report: not saved (give --out DIR to keep report.json "
                                                             "and the image grids)")


def run_conditions(pipe: Pipeline, args: argparse.Namespace, opts: GenerateOptions) -> int:
    """Class, layout and inpainting models: their own checks (:mod:`nanoldm.evaluation.conditions`)."""
    if args.condition is None:
        result = {"inpaint": conditions.evaluate_inpaint(pipe, count=args.singles // 3 or 1, seed=args.seed,
                                                          options=opts)}
    else:
        module = load_condition(args.condition).to(pipe.device).eval()
        if isinstance(module, ClassEmbedding):
            result = {"class": conditions.evaluate_class(pipe, module, seed=args.seed, options=opts)}
        else:
            result = {"layout": conditions.evaluate_layout(pipe, module, count=args.singles, seed=args.seed,
                                                            options=opts)}
    sampling = {"sampler": opts.sampler, "steps": opts.steps, "cfg_scale": opts.cfg_scale}
    for kind, row in result.items():
        print(f"{kind}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "report.json").write_text(json.dumps({"settings": sampling, **result}, indent=1))
    _say_where(args.out)
    return 0

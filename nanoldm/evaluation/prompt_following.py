"""Prompt following on the shapes world: generate for a fixed prompt set and let the judge score every image.

The prompt set (``eval_prompts``) is drawn from the shapes world itself with its own seed, so prompts read exactly
like training captions, in these groups:

- ``single``: one object, named with size, colour, shape and position ("a small red circle at the top left");
- ``partial``: one object with its size, its position or both left out ("a red circle at the top", "a small red
  circle", "a red circle"), in turn: the prompts people type; the judge scores what they name and the count;
- ``pair``: two objects and their relation ("a blue square left of a yellow triangle");
- ``held_out``: one object whose (colour, shape) combination the model never saw in training (only when the
  model was trained with hold-outs); ``held_out_pair`` the same inside two-object prompts;
- ``concept``: one object of a shape the model has no word for (``concept="star"``), named in the prompt by a
  learned token ("a small red <star> at the top left", textual inversion) or, without a token, by the generic
  word the training captions used ("a small red shape at the top left", the baseline); judged as that shape.

Image ``i`` of the set is generated with seed ``seed + i``, so a report is reproducible. ``evaluate`` returns, per
group, the share of images right on each attribute the prompts name and on all of them at once (``all``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from tqdm.auto import tqdm

from nanoldm.data.shapes import ShapesWorld, Split
from nanoldm.data.vocabulary import GENERIC_NOUN, caption_for, parse_caption
from nanoldm.evaluation.shapes_judge import score, style_of
from nanoldm.options import GenerateOptions, as_options
from nanoldm.pipelines.conventions import PIXEL_ROUNDING
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.pipeline import Pipeline
from nanoldm.pipelines.sampling import sample_contexts
from nanoldm.text.encode import encode_prompt_pair

EVAL_SEED = 1_000_003  # the prompt set's world seed: never a training seed by accident
ATTRIBUTES = ("colour", "shape", "size", "position", "relation", "count", "style")
GROUPS = ("single", "partial", "pair", "held_out", "held_out_pair", "concept")
LEFT_OUT = (("size",), ("position",), ("size", "position"))  # what the partial prompts leave out, in turn


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    group: str
    truth: str = ""  # the caption the judge scores against, when the prompt is not one (a learned token)

    @property
    def caption(self) -> str:
        return self.truth or self.prompt


def eval_prompts(*, singles: int = 96, pairs: int = 64, held_out: frozenset[tuple[str, str]] = frozenset(),
                 held_out_count: int = 48, extra_shapes: tuple[str, ...] = (), concept: str | None = None,
                 token: str | None = None, concept_count: int = 48, concept_sizes: tuple[str, ...] = (),
                 seed: int = EVAL_SEED, size: int = 32, partials: int = 0) -> list[EvalPrompt]:
    """The fixed prompt set: ``singles`` one-object, ``partials`` partial one-object (from their own world seed)
    and ``pairs`` two-object prompts free of hold-outs, then (with
    ``held_out``) ``held_out_count`` prompts of each held-out group, then (with ``concept``) ``concept_count``
    prompts naming that shape by ``token`` (default: the generic noun), of the ``concept_sizes`` only if given."""
    def captions(count: int, objects: tuple[int, ...], split: Split, **world) -> list[str]:
        if count < 1:
            return []
        world = ShapesWorld(size=size, seed=seed, count=count, objects=objects, held_out=held_out, split=split,
                            extra_shapes=world.pop("extra_shapes", extra_shapes), **world)
        return [s.caption for s in world]

    prompts = [EvalPrompt(c, "single") for c in captions(singles, (1,), Split.TRAIN)]
    if partials > 0:
        world = ShapesWorld(size=size, seed=seed + 1, count=partials, objects=(1,), held_out=held_out,
                            extra_shapes=extra_shapes)
        prompts += [EvalPrompt(_leave_out(s.caption, LEFT_OUT[i % len(LEFT_OUT)]), "partial")
                    for i, s in enumerate(world)]
    prompts += [EvalPrompt(c, "pair") for c in captions(pairs, (2,), Split.TRAIN)]
    if held_out:
        prompts += [EvalPrompt(c, "held_out") for c in captions(held_out_count, (1,), Split.HELD_OUT)]
        prompts += [EvalPrompt(c, "held_out_pair") for c in captions(held_out_count, (2,), Split.HELD_OUT)]
    if concept:
        truths = captions(concept_count, (1,), Split.TRAIN, extra_shapes=(concept,), only_shapes=(concept,),
                          sizes=tuple(concept_sizes))
        word = token or GENERIC_NOUN
        prompts += [EvalPrompt(t.replace(f" {concept} ", f" {word} "), "concept", t) for t in truths]
    return prompts


def _leave_out(caption: str, attributes: tuple[str, ...]) -> str:
    prompt = parse_caption(caption)
    return caption_for([{k: v for k, v in o.items() if k not in attributes} for o in prompt.objects])


def generate_batch(pipe: Pipeline, prompts: list[str], seeds: list[int], options: GenerateOptions | None = None,
                   **fields) -> list[Image.Image]:
    """One image per (prompt, seed), all in one batch (different prompts, unlike ``Pipeline.txt2img``), at the
    model's native size, with ``options`` or :class:`GenerateOptions` ``fields`` (negative_prompt, sampler,
    steps, cfg_scale, ...). The images equal ``pipe.txt2img(prompt, seed=seed, ...)`` one by one."""
    opts, parts = as_options(options, **fields), pipe.parts()
    with torch.no_grad():
        cond, uncond = encode_prompt_pair(parts.text_encoder, parts.tokenizer, prompts,
                                          [opts.negative_prompt] * len(prompts), clip_skip=opts.clip_skip)
    return tensor_to_pil(sample_contexts(parts, opts, cond, uncond, seeds), PIXEL_ROUNDING[opts.like])


def evaluate(pipe: Pipeline, prompts: list[EvalPrompt], *, seed: int = 0, batch_size: int = 32, progress: bool = True,
             extra_shapes: tuple[str, ...] = (), style: str | None = None, options: GenerateOptions | None = None,
             **sampling) -> dict:
    """Generate for every prompt and judge it (with ``options`` or :class:`GenerateOptions` fields ``sampling``).
    Returns {"groups": {group: {attribute: share right, "all": share right on everything, "n": count}},
    "images": [(EvalPrompt, PIL image, score dict)]}. With ``style``, the "style" column is the share of images
    drawn in it (``style_of``); it is not part of "all"."""
    opts = as_options(options, **sampling)
    results = []
    with tqdm(total=len(prompts), desc="eval", unit="image", disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            seeds = [seed + start + i for i in range(len(chunk))]
            images = generate_batch(pipe, [p.prompt for p in chunk], seeds, options=opts)
            for p, image in zip(chunk, images):
                verdict = score(image, p.caption, shapes=extra_shapes)
                if style is not None:
                    verdict["style"] = style_of(image) == style
                results.append((p, image, verdict))
            bar.update(len(chunk))
    return {"groups": summarise(results), "images": results}


def summarise(results: list[tuple[EvalPrompt, object, dict]]) -> dict:
    """Per group: the share of images right on each attribute its prompts name, on all of them, and n."""
    groups = {}
    for group in GROUPS:
        scores = [s for p, _, s in results if p.group == group]
        if not scores:
            continue
        row = {attr: sum(s[attr] for s in scores if attr in s) / n
               for attr in ATTRIBUTES if (n := sum(attr in s for s in scores))}
        groups[group] = {**row, "all": sum(s["all_correct"] for s in scores) / len(scores), "n": len(scores)}
    return groups


def format_table(groups: dict) -> str:
    """The report as a fixed-width table: one row per group, one column per attribute (percent)."""
    columns = [a for a in ATTRIBUTES if any(a in row for row in groups.values())] + ["all"]
    lines = [f"{'group':14s}{'n':>5s}" + "".join(f"{c:>10s}" for c in columns)]
    for group, row in groups.items():
        cells = "".join(f"{100 * row[c]:9.1f}%" if c in row else f"{'-':>10s}" for c in columns)
        lines.append(f"{group:14s}{row['n']:5d}" + cells)
    return "\n".join(lines)

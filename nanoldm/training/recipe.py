"""``nanoldm train all``: the whole chain from nothing, each stage a library call that an ordinary ``nanoldm``
command also makes (:func:`run_recipe`; :func:`stages` lists them with their typed arguments).

1. ``data``: the shapes world exported as a user's folder would look (``nanoldm shapes export``), with the
   held-out combinations never drawn and the last ``--uncaptioned`` share of the images left without captions.
   ``--partial 0.5`` (the default) leaves a lone object's size and its position each out of half the captions
   (and names half the sizes in pairs), so "a red circle" means one red circle of any size, anywhere.
   ``--generic-shape star`` also draws stars but captions them only "shape" ("a red shape at the top left").
   The word is also used for a ``--generic-share`` of the other shapes, and stars are drawn ``--generic-weight``
   times as often as each of them (by default the share, so "shape" names every shape equally often): a base
   for textual inversion (the README gives that recipe). Off by default: the built-in model is trained without it.
   ``--vae-style dark`` (the default) also exports ``--vae-style-share`` as many images in that style, seen by
   the VAE only: the LDM never draws it, a hypernetwork can learn it;
2. ``clip``: a small CLIP trained on the captioned images (``nanoldm train clip``);
3. ``caption``: that CLIP captions the uncaptioned images (``nanoldm caption``; the export kept their true
   captions aside, so the rate of right captions is printed);
4. ``vae``: the autoencoder (``nanoldm train vae``);
5. ``base``: VAE + CLIP's text tower + a fresh UNet of the ``shapes_tiny`` preset, written as one model file;
6. ``ldm``: the text-conditioned UNet on the now fully captioned folder (``nanoldm train ldm``);
7. ``decoder``: the VAE's decoder alone finetuned for ``--decoder-steps`` (``nanoldm train vae --init
   --decoder-only``) on the VAE's images plus ``--decoder-style-share`` as many in ``--decoder-style`` (paper).
   The encoder, hence the latent space the UNet learned, does not move; the decoder draws sharper colours and
   learns a style that neither the encoder nor the UNet trained on, for a hypernetwork to find
   (``decoder_data`` exports those images first);
8. ``eval``: prompt following, judged (``nanoldm eval``), written to ``OUT/eval/report.json``; with a generic
   shape, also the baseline for textual inversion: large ones asked for by the generic word (a small star is
   7 pixels at 32x32, which an f=4 VAE blurs past the judge's reading).

The defaults are the 30-minute recipe: on a 2-core CPU the whole chain takes about 30 minutes and its model meets
the prompt-following targets (one object, two objects, held-out combinations). The built-in model is the longer
recipe ``--ldm-steps 6000 --ldm-lr 3e-4 --ldm-min-snr-gamma 0 --clip-steps 1500 --decoder-steps 1500`` (about
an hour on an idle 2-core CPU; better on two-object prompts): ``nanoldm/assets/shapes.json`` records it.

Every command run is appended to ``OUT/commands.txt`` and every stage's seconds to ``OUT/stages.jsonl``; the
final model is ``OUT/model.safetensors`` (the decoder stage's, or the LDM's with ``--decoder-steps 0``). Run it
again with the same ``--out`` after a crash or Ctrl-C: stages whose output exists are skipped and an interrupted
trainer resumes from its checkpoint (``--resume``).
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nanoldm.checkpoint.load import load_model
from nanoldm.checkpoint.parts import load_clip, load_vae
from nanoldm.checkpoint.save import save_model
from nanoldm.config import SHAPES_TINY
from nanoldm.data.captioning import caption_folder
from nanoldm.data.export import export_world
from nanoldm.data.shapes import ShapesWorld
from nanoldm.data.sources import ImageSource
from nanoldm.data.vocabulary import STYLES, parse_combinations, parse_names
from nanoldm.evaluation.report import (DEFAULT_HELD_OUT_TEXT, EvalSettings, PromptCounts, evaluate_prompt_following,
                                       write_report)
from nanoldm.model import LatentDiffusion
from nanoldm.pipelines.pipeline import load_pipeline
from nanoldm.text.tokenizer import CLIPTokenizer
from nanoldm.training.clip import train_clip
from nanoldm.training.latent_setup import LatentOptions
from nanoldm.training.ldm_trainer import LDMOptions, train_ldm
from nanoldm.training.loop import CHECKPOINT, TrainConfig
from nanoldm.training.vae import VAEOptions, train_vae

MODEL_FILE = "model.safetensors"
ONE_STAGE_STYLES = tuple(s for s in STYLES if s != "light") + ("",)  # styles a single stage may add; '' for none


@dataclass(frozen=True)
class RecipeOptions:
    """``train all``'s settings (the flags of the same names); the defaults are the 30-minute recipe."""
    out: str
    count: int = 20000
    uncaptioned: float = 0.25
    partial: float = 0.5
    held_out: str = DEFAULT_HELD_OUT_TEXT
    generic_shape: str = ""
    generic_share: float = 0.2
    generic_weight: float | None = None  # None: generic_share
    vae_style: str = "dark"
    vae_style_share: float = 0.5
    decoder_steps: int = 500
    decoder_style: str = "paper"
    decoder_style_share: float = 0.3
    clip_steps: int = 1200
    vae_steps: int = 1500
    ldm_steps: int = 2500
    ldm_batch_size: int = 64
    ldm_lr: float = 1e-3
    ldm_min_snr_gamma: float = 5.0  # 0: off
    eval_prompts: int = 96
    seed: int = 0
    device: str | None = None


@dataclass
class Stage:
    """One stage: ``function(**arguments)`` (typed), the file that marks it done, and the equivalent ``nanoldm``
    command for OUT/commands.txt (None for the in-process ``base`` stage)."""
    name: str
    done: Path
    function: Callable[..., object]
    arguments: dict
    command: list[str] | None

    def resumable(self) -> bool:
        """A trainer interrupted before: its checkpoint is on disk."""
        loop = self.arguments.get("loop")
        return loop is not None and (Path(loop.out_dir) / CHECKPOINT).exists()


def stages(o: RecipeOptions) -> list[Stage]:
    """Every stage of the module docstring, in order, with its typed arguments."""
    out = Path(o.out)
    data, style_data, decoder_data = out / "data", out / f"data_{o.vae_style}", out / f"data_{o.decoder_style}"
    clip, vae, ldm = out / "clip" / "clip.safetensors", out / "vae" / "vae.safetensors", out / "ldm" / MODEL_FILE
    vae_extra = (style_data,) if o.vae_style else ()
    result = [export_stage("data", o, data, o.count, o.seed, uncaptioned=o.uncaptioned)]
    if o.vae_style:
        result.append(export_stage("style_data", o, style_data, max(2, round(o.count * o.vae_style_share)), o.seed + 1,
                                   style=o.vae_style))
    result += [
        trainer_stage("clip", clip, train_clip, "clip", data, (), loop(o, "clip", o.clip_steps, 128, 1e-3, 50), {}),
        Stage("caption", out / "captioned", caption_folder, {"folder": data, "clip": clip,
                                                             "generic_noun": bool(o.generic_shape)},
              ["caption", str(data), "--clip", str(clip), *(["--generic-noun"] if o.generic_shape else [])]),
        trainer_stage("vae", vae, train_vae, "vae", data, vae_extra, loop(o, "vae", o.vae_steps, 32, 1e-3, 50), {}),
        Stage("base", out / "base.safetensors", assemble_base,
              {"vae_path": vae, "clip_path": clip, "path": out / "base.safetensors", "seed": o.seed}, None),
        ldm_stage(o, out / "base.safetensors", data, ldm),
    ]
    if o.decoder_steps and o.decoder_style:
        result.append(export_stage("decoder_data", o, decoder_data, max(2, round(o.count * o.decoder_style_share)),
                                   o.seed + 2, style=o.decoder_style))
    if o.decoder_steps:
        extra = vae_extra + ((decoder_data,) if o.decoder_style else ())
        result.append(trainer_stage("decoder", out / "decoder" / MODEL_FILE, train_vae, "vae", data, extra,
                                    loop(o, "decoder", o.decoder_steps, 32, 3e-4, 50),
                                    {"init": str(ldm), "decoder_only": True}))
    return result + [eval_stage(o, final_model(o))]


def loop(o: RecipeOptions, stage: str, steps: int, batch_size: int, lr: float, warmup: int, **changes) -> TrainConfig:
    """A stage's loop: the trainers' defaults but for these (what its command line sets)."""
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup, seed=o.seed,
                       out_dir=str(Path(o.out) / stage), **changes)


def loop_flags(cfg: TrainConfig) -> list[str]:
    """The command-line flags of a recipe stage's loop (see :func:`loop`)."""
    flags = ["--out", cfg.out_dir, "--steps", str(cfg.steps), "--seed", str(cfg.seed), "--batch-size",
             str(cfg.batch_size), "--lr", str(cfg.lr), "--warmup-steps", str(cfg.warmup_steps)]
    return flags + [*(["--ema-decay", str(cfg.ema_decay)] if cfg.ema_decay is not None else []),
                    *(["--sample-every", str(cfg.sample_every)] if cfg.sample_every else [])]


def export_stage(name: str, o: RecipeOptions, folder: Path, count: int, seed: int, *,
                 uncaptioned: float | None = None, style: str = "light") -> Stage:
    """A shapes-world export (``nanoldm shapes export``) with the held-out combinations never drawn. The main
    export (``uncaptioned`` given) draws the generic shape ``generic_weight`` times as often as each other
    shape, captioned "shape" (as are ``generic_share`` of the others); a style export draws it named."""
    weight = o.generic_share if o.generic_weight is None else o.generic_weight
    extra = parse_names(o.generic_shape)
    generic = uncaptioned is not None and extra
    kwargs = dict(generic_extra=True, generic_share=o.generic_share, extra_weight=weight) if generic else {}
    partial = o.partial if uncaptioned is not None else 0.0  # only the main export's captions are read
    world = ShapesWorld(size=32, seed=seed, count=count, held_out=parse_combinations(o.held_out), extra_shapes=extra,
                        style=style, partial=partial, **kwargs)
    command = ["shapes", "export", str(folder), "--count", str(count), "--seed", str(seed), "--held-out", o.held_out,
               *(["--uncaptioned", str(uncaptioned)] if uncaptioned is not None else []),
               *(["--partial", str(partial)] if partial else []),
               *(["--style", style] if style != "light" else []), "--overwrite",
               *(["--extra-shapes", o.generic_shape] if extra else []),
               *(["--generic-extra", "--generic-share", str(o.generic_share), "--extra-weight", str(weight)]
                 if kwargs else [])]
    return Stage(name, folder / "metadata.jsonl", export_world,
                 {"world": world, "directory": folder, "overwrite": True, "uncaptioned": uncaptioned or 0.0}, command)


def trainer_stage(name: str, done: Path, function: Callable, trainer: str, data: Path, extra: tuple[Path, ...],
                  cfg: TrainConfig, changes: dict) -> Stage:
    """``train clip`` or ``train vae`` (with ``VAEOptions`` ``changes``) on a folder and ``extra`` folders.
    ``count`` is the command's default (a folder's images are all used)."""
    arguments = {"data": ImageSource(str(data), count=5000 if trainer == "clip" else 2000, size=32), "loop": cfg}
    if trainer == "vae":
        arguments |= {"options": VAEOptions(**changes), "extra": tuple(ImageSource(str(e), size=32) for e in extra)}
    init = ["--init", changes["init"], "--decoder-only"] if changes else []
    extra_flags = ["--extra-data", *map(str, extra)] if extra else []
    return Stage(name, done, function, arguments,
                 ["train", trainer, *init, "--data", str(data), *extra_flags, *loop_flags(cfg)])


def train_ldm_on(base: Path, data: ImageSource, loop: TrainConfig, options: LDMOptions, *,
                 resume: bool = False) -> Path:
    """:func:`train_ldm` on the model in the file ``base`` (``train ldm --model``)."""
    return train_ldm(load_model(base), data, loop, options, resume=resume)


def ldm_stage(o: RecipeOptions, base: Path, data: Path, done: Path) -> Stage:
    """The text-conditioned UNet on the captioned folder, with EMA and Min-SNR (``ldm_min_snr_gamma``, 0: off)."""
    cfg = loop(o, "ldm", o.ldm_steps, o.ldm_batch_size, o.ldm_lr, 100, ema_decay=0.999, sample_every=1000)
    options = LDMOptions(latent=LatentOptions(min_snr_gamma=o.ldm_min_snr_gamma or None, device=o.device))
    command = ["train", "ldm", "--model", str(base), "--data", str(data), *loop_flags(cfg),
               *(["--min-snr-gamma", str(o.ldm_min_snr_gamma)] if o.ldm_min_snr_gamma else []),
               *(["--device", o.device] if o.device else [])]
    return Stage("ldm", done, train_ldm_on, {"base": base, "data": ImageSource(str(data)), "loop": cfg,
                                             "options": options}, command)


def evaluate_to(settings: EvalSettings, counts: PromptCounts, out: Path, *, device: str | None = None) -> None:
    """``nanoldm eval --out OUT``: judge the prompts, print the table, write the report."""
    pipe = load_pipeline(settings.model, device=device)
    write_report(evaluate_prompt_following(pipe, settings, counts), settings, out)


def eval_stage(o: RecipeOptions, model: Path) -> Stage:
    """Prompt following of the final model; with a generic shape also large ones asked for by the generic word."""
    settings = EvalSettings(model=str(model), held_out=o.held_out, concept=o.generic_shape or None,
                            concept_sizes="large" if o.generic_shape else "")
    counts = PromptCounts(singles=o.eval_prompts, pairs=max(1, 2 * o.eval_prompts // 3), partials=o.eval_prompts,
                          held_out=max(1, o.eval_prompts // 2))
    out = Path(o.out) / "eval"
    command = ["eval", "--model", str(model), "--held-out", o.held_out, "--out", str(out), "--singles",
               str(counts.singles), "--pairs", str(counts.pairs), "--partials", str(counts.partials),
               "--held-out-count", str(counts.held_out),
               *(["--concept", o.generic_shape, "--concept-sizes", "large"] if o.generic_shape else []),
               *(["--device", o.device] if o.device else [])]
    return Stage("eval", out / "report.json", evaluate_to,
                 {"settings": settings, "counts": counts, "out": out, "device": o.device}, command)


def final_model(o: RecipeOptions) -> Path:
    return Path(o.out) / ("decoder" if o.decoder_steps else "ldm") / MODEL_FILE


def run_recipe(o: RecipeOptions) -> Path:
    """Run every stage not done yet (a trainer with a checkpoint resumes); log each one's command and seconds.
    Returns OUT/model.safetensors."""
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for stage in stages(o):
        if stage.done.exists():
            print(f"== {stage.name}: done already ({stage.done})")
            continue
        resume = stage.resumable()
        command = stage.command + ["--resume"] if resume else stage.command
        print(f"== {stage.name}: nanoldm {shlex.join(command)}" if command else f"== {stage.name}")
        t0 = time.perf_counter()
        stage.function(**stage.arguments, **({"resume": True} if resume else {}))
        if stage.name == "caption":
            stage.done.touch()
        with open(out / "commands.txt", "a") as f:
            f.write(f"nanoldm {shlex.join(command)}\n" if command else f"# {stage.name}: assemble_base()\n")
        with open(out / "stages.jsonl", "a") as f:
            f.write(json.dumps({"stage": stage.name, "seconds": round(time.perf_counter() - t0, 1)}) + "\n")
    shutil.copyfile(final_model(o), out / MODEL_FILE)
    print(f"model: {out / MODEL_FILE} ({(time.perf_counter() - started) / 60:.1f} min in this run; "
          f"stage times in {out / 'stages.jsonl'})")
    return out / MODEL_FILE


def assemble_base(vae_path: Path, clip_path: Path, path: Path, *, seed: int = 0) -> None:
    """The base of the LDM stage: the trained VAE, CLIP's text tower as the text encoder, and a fresh
    ``shapes_tiny`` UNet whose cross-attention reads that tower's width. Written as one model file."""
    vae, clip = load_vae(vae_path), load_clip(clip_path)
    config = dataclasses.replace(SHAPES_TINY, vae=vae.cfg, text=clip.cfg.text, image_size=clip.cfg.image_size,
                                 unet=dataclasses.replace(SHAPES_TINY.unet, context_dim=clip.cfg.text.width))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LatentDiffusion.from_config(config, tokenizer=CLIPTokenizer.default())
    model.vae.load_state_dict(vae.state_dict())
    model.text_encoder.load_state_dict(clip.text_model.state_dict())
    save_model(model, path, overwrite=True)

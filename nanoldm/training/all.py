"""``nanoldm train all``: the whole chain from nothing, each stage an ordinary ``nanoldm`` command.

1. ``data``: the shapes world exported as a user's folder would look (``nanoldm shapes export``), with the
   held-out combinations never drawn and the last ``--uncaptioned`` share of the images left without captions.
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
54 minutes; better on two-object prompts): ``nanoldm/assets/shapes.json`` records it.

Every command run is appended to ``OUT/commands.txt`` and every stage's seconds to ``OUT/stages.jsonl``; the
final model is ``OUT/model.safetensors`` (the decoder stage's, or the LDM's with ``--decoder-steps 0``). Run it again with the same ``--out`` after a crash or Ctrl-C: stages
whose output exists are skipped and an interrupted trainer resumes from its checkpoint (``--resume``).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import time
from pathlib import Path

from nanoldm.data.shapes import DEFAULT_HELD_OUT
from nanoldm.data.vocabulary import STYLES

MODEL_FILE = "model.safetensors"


ONE_STAGE_STYLES = tuple(s for s in STYLES if s != "light") + ("",)  # styles a single stage may add; '' for none


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("all", help="the whole chain: data -> CLIP -> captions -> VAE -> LDM -> eval",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (one subfolder per stage)")
    p.add_argument("--count", type=int, default=20000, help="shapes-world images")
    p.add_argument("--uncaptioned", type=float, default=0.25, help="share of the images left for the captioner")
    p.add_argument("--held-out", default=", ".join(f"{c} {s}" for c, s in sorted(DEFAULT_HELD_OUT)),
                   help="(colour, shape) combinations never drawn for training; '' for none")
    p.add_argument("--generic-shape", default="", choices=("star", "heart", ""),
                   help="an extra shape drawn but captioned only 'shape' (for textual inversion); '' for none")
    p.add_argument("--generic-share", type=float, default=0.2,
                   help="share of the base shapes also captioned 'shape'")
    p.add_argument("--generic-weight", type=float, default=None,
                   help="how often the generic shape is drawn relative to each base shape (default: --generic-share)")
    p.add_argument("--vae-style", default="dark", choices=ONE_STAGE_STYLES,
                   help="a style exported for the VAE only; '' for none")
    p.add_argument("--vae-style-share", type=float, default=0.5,
                   help="images in the VAE-only style, as a share of --count")
    p.add_argument("--decoder-steps", type=int, default=500,
                   help="steps of the decoder-only VAE finetune after the LDM (0: none)")
    p.add_argument("--decoder-style", default="paper", choices=ONE_STAGE_STYLES,
                   help="a style only the decoder finetune sees; '' for none")
    p.add_argument("--decoder-style-share", type=float, default=0.3,
                   help="images in the decoder-only style, as a share of --count")
    p.add_argument("--clip-steps", type=int, default=1200)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--ldm-steps", type=int, default=2500)
    p.add_argument("--ldm-batch-size", type=int, default=64)
    p.add_argument("--ldm-lr", type=float, default=1e-3)
    p.add_argument("--ldm-min-snr-gamma", type=float, default=5.0, metavar="G",
                   help="Min-SNR loss weighting of the LDM stage (train ldm --min-snr-gamma); 0: off")
    p.add_argument("--eval-prompts", type=int, default=96,
                   help="one-object prompts of the final eval (two-object: 2/3 as many; each held-out group: half)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="for the LDM stage (default: cuda if available, else cpu)")
    p.set_defaults(run=run)


def stages(args: argparse.Namespace, out: Path) -> list[tuple[str, Path, list[str] | None]]:
    """(name, the file that marks it done, the nanoldm command; None for the in-process ``base`` stage)."""
    data, style_data, seed = out / "data", out / f"data_{args.vae_style}", str(args.seed)
    decoder_data = out / f"data_{args.decoder_style}"
    clip, vae, ldm, decoder = out / "clip", out / "vae", out / "ldm", out / "decoder"
    vae_data = [str(data), *(["--extra-data", str(style_data)] if args.vae_style else [])]
    loop = lambda run, steps, extra: ["--out", str(run), "--steps", str(steps), "--seed", seed, *extra]  # noqa: E731
    device = ["--device", args.device] if args.device else []
    return [
        ("data", data / "metadata.jsonl",
         ["shapes", "export", str(data), "--count", str(args.count), "--seed", seed, "--held-out", args.held_out,
          "--uncaptioned", str(args.uncaptioned), "--overwrite",
          *(["--extra-shapes", args.generic_shape, "--generic-extra", "--generic-share", str(args.generic_share),
             "--extra-weight", str(args.generic_share if args.generic_weight is None else args.generic_weight)]
           if args.generic_shape else [])]),
        *([("style_data", style_data / "metadata.jsonl",
            style_export(args, style_data, args.vae_style, args.vae_style_share, args.seed + 1))]
          if args.vae_style else []),
        ("clip", clip / "clip.safetensors",
         ["train", "clip", "--data", str(data), *loop(clip, args.clip_steps, ["--batch-size", "128",
                                                                            "--warmup-steps", "50"])]),
        ("caption", out / "captioned", ["caption", str(data), "--clip", str(clip / "clip.safetensors"),
                                        *(["--generic-noun"] if args.generic_shape else [])]),
        ("vae", vae / "vae.safetensors",
         ["train", "vae", "--data", *vae_data,
          *loop(vae, args.vae_steps, ["--batch-size", "32", "--warmup-steps", "50"])]),
        ("base", out / "base.safetensors", None),
        ("ldm", ldm / MODEL_FILE,
         ["train", "ldm", "--model", str(out / "base.safetensors"), "--data", str(data),
          *loop(ldm, args.ldm_steps, ["--batch-size", str(args.ldm_batch_size), "--lr", str(args.ldm_lr),
                                      "--warmup-steps", "100", "--ema-decay", "0.999", "--sample-every", "1000",
                                      *(["--min-snr-gamma", str(args.ldm_min_snr_gamma)]
                                        if args.ldm_min_snr_gamma else []), *device])]),
        *([("decoder_data", decoder_data / "metadata.jsonl",
            style_export(args, decoder_data, args.decoder_style, args.decoder_style_share, args.seed + 2))]
          if args.decoder_steps and args.decoder_style else []),
        *([("decoder", decoder / MODEL_FILE,
            ["train", "vae", "--init", str(ldm / MODEL_FILE), "--decoder-only", "--data", *vae_data,
             *(([] if args.vae_style else ["--extra-data"]) + [str(decoder_data)] if args.decoder_style else []),
             *loop(decoder, args.decoder_steps, ["--batch-size", "32", "--lr", "3e-4", "--warmup-steps", "50"])])]
          if args.decoder_steps else []),
        ("eval", out / "eval" / "report.json",
         ["eval", "--model", str(final_model(args, out)), "--held-out", args.held_out, "--out", str(out / "eval"),
          "--singles", str(args.eval_prompts), "--pairs", str(max(1, 2 * args.eval_prompts // 3)),
          "--held-out-count", str(max(1, args.eval_prompts // 2)),
          *(["--concept", args.generic_shape, "--concept-sizes", "large"] if args.generic_shape else []), *device]),
    ]


def style_export(args: argparse.Namespace, folder: Path, style: str, share: float, seed: int) -> list[str]:
    """The ``shapes export`` command of images in ``style`` that only an autoencoder stage sees."""
    return ["shapes", "export", str(folder), "--count", str(max(2, round(args.count * share))), "--seed", str(seed),
            "--held-out", args.held_out, "--style", style, "--overwrite",
            *(["--extra-shapes", args.generic_shape] if args.generic_shape else [])]


def final_model(args: argparse.Namespace, out: Path) -> Path:
    return out / ("decoder" if args.decoder_steps else "ldm") / MODEL_FILE


def run(args: argparse.Namespace) -> int:
    from nanoldm.cli.__main__ import main

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name, done, command in stages(args, out):
        if done.exists():
            print(f"== {name}: done already ({done})")
            continue
        if command and command[0] == "train" and (Path(command[command.index("--out") + 1])
                                                  / "checkpoint.safetensors").exists():
            command = command + ["--resume"]
        print(f"== {name}: nanoldm {shlex.join(command)}" if command else f"== {name}")
        t0 = time.perf_counter()
        if command is None:
            assemble_base(out / "vae" / "vae.safetensors", out / "clip" / "clip.safetensors", done, seed=args.seed)
        elif main(command) != 0:
            raise RuntimeError(f"stage {name} failed: nanoldm {shlex.join(command)}")
        if name == "caption":
            done.touch()
        seconds = time.perf_counter() - t0
        with open(out / "commands.txt", "a") as f:
            f.write(f"nanoldm {shlex.join(command)}\n" if command else f"# {name}: assemble_base()\n")
        with open(out / "stages.jsonl", "a") as f:
            f.write(json.dumps({"stage": name, "seconds": round(seconds, 1)}) + "\n")
    shutil.copyfile(final_model(args, out), out / MODEL_FILE)
    print(f"model: {out / MODEL_FILE} ({(time.perf_counter() - started) / 60:.1f} min in this run; "
          f"stage times in {out / 'stages.jsonl'})")
    return 0


def assemble_base(vae_path: Path, clip_path: Path, path: Path, *, seed: int = 0) -> None:
    """The base of the LDM stage: the trained VAE, CLIP's text tower as the text encoder, and a fresh
    ``shapes_tiny`` UNet whose cross-attention reads that tower's width. Written as one model file."""
    import dataclasses

    import torch

    from nanoldm.checkpoint.save import save_model
    from nanoldm.config import SHAPES_TINY
    from nanoldm.model import LatentDiffusion
    from nanoldm.checkpoint.parts import load_clip, load_vae
    from nanoldm.text.tokenizer import CLIPTokenizer

    vae, clip = load_vae(vae_path), load_clip(clip_path)
    config = dataclasses.replace(SHAPES_TINY, vae=vae.cfg, text=clip.cfg.text, image_size=clip.cfg.image_size,
                                 unet=dataclasses.replace(SHAPES_TINY.unet, context_dim=clip.cfg.text.width))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LatentDiffusion.from_config(config, tokenizer=CLIPTokenizer.default())
    model.vae.load_state_dict(vae.state_dict())
    model.text_encoder.load_state_dict(clip.text_model.state_dict())
    save_model(model, path, overwrite=True)

"""``nanoldm train ldm``: a text-conditioned latent diffusion UNet on a frozen VAE and text encoder.

The loss (Rombach et al. 2022, eq. 2; Ho et al. 2020, algorithm 1), for a batch of cached images:

1. z0 ~ q(z | x): a posterior sample from the latent cache (:mod:`nanoldm.data.latents`), already scaled;
2. c = the caption's hidden states, replaced by the empty prompt's with probability ``cond_drop`` (10%), so
   the same UNet also learns the unconditional model that classifier-free guidance needs (Ho & Salimans 2022);
3. t ~ U{0, ..., T-1}, eps ~ N(0, I), z_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) eps;
4. loss = || target - unet(z_t, t, c) ||^2 with target = eps (eps-prediction) or
   v = sqrt(ab_t) eps - sqrt(1 - ab_t) z0 (v-prediction, Salimans & Ho 2022). With ``--min-snr-gamma G``
   each sample's error is weighted by min(SNR_t, G) / SNR_t (eps) or min(SNR_t, G) / (SNR_t + 1) (v), the
   Min-SNR weighting of Hang et al. 2023 (kohya's ``--min_snr_gamma``; the paper uses G = 5), so the nearly
   clean steps, which are easy, stop dominating the gradient.

Every random draw (z0, the drop, t, eps) comes from the loop's generator, so a resumed run is exact.
Only the UNet is trained and checkpointed; the VAE and text encoder come from the base model and stay
frozen. The base model is ``--model PATH`` (any format :func:`load_model` reads), or ``--init shapes_tiny``:
random networks of that preset built from ``--seed`` (so ``--resume`` rebuilds the same ones) -- random
frozen parts only make sense for smoke tests; train a VAE and a CLIP first for a real model. At the end the
whole model, the UNet with its EMA weights if EMA is on, is written to ``OUT/model.safetensors``.

``--condition class|layout|mask`` swaps step 2's caption for another condition through two hooks,
``LDMTask.context`` and ``LDMTask.unet_input``: see :mod:`nanoldm.training.ldm_conditions`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nanoldm.config import PRESETS, PredictionType
from nanoldm.data.latents import LatentCache, load_or_build
from nanoldm.diffusion.schedule import NoiseSchedule
from nanoldm.model import LatentDiffusion
from nanoldm.options import GenerateOptions
from nanoldm.pipelines.images import tensor_to_pil
from nanoldm.pipelines.parts import ModelParts
from nanoldm.pipelines.txt2img import txt2img

MODEL_FILE = "model.safetensors"
SAMPLE_PROMPTS = ("a large red circle at the top left", "a small blue square in the center",
                  "a green triangle to the left of a yellow circle", "a large purple square at the bottom right")
PREDICTIONS = {"eps": PredictionType.EPSILON, "v": PredictionType.V}
CONDITIONS = ("text", "class", "layout", "mask")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction: PredictionType) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR for eps-prediction, and
    min(SNR, gamma) / (SNR + 1) for v-prediction (its loss already carries a factor SNR + 1 over eps')."""
    return snr.clamp(max=gamma) / (snr if prediction is PredictionType.EPSILON else snr + 1)


class LDMTask:
    """The :class:`~nanoldm.training.loop.Task` of a text-conditioned LDM over a :class:`LatentCache`."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, *, cond_drop: float = 0.1,
                 sample_prompts: tuple[str, ...] = SAMPLE_PROMPTS, sample_steps: int = 20, cfg_scale: float = 5.0,
                 min_snr_gamma: float | None = None):
        if not 0.0 <= cond_drop <= 1.0:
            raise ValueError(f"cond_drop must be in [0, 1], got {cond_drop}")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"--min-snr-gamma must be positive, got {min_snr_gamma}")
        self.model, self.cond_drop, self.min_snr_gamma = model, cond_drop, min_snr_gamma
        self.schedule = NoiseSchedule.from_config(model.config.schedule)
        self.prediction = model.config.schedule.prediction_type
        self.sample_prompts, self.sample_steps, self.cfg_scale = sample_prompts, sample_steps, cfg_scale
        freeze(model.vae)
        freeze(model.text_encoder)
        self.cache = cache.to(next(model.unet.parameters()).device)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def options(self) -> dict:
        """What the loss depends on beyond the config; a resume must keep them (see the loop)."""
        return {"cond_drop": self.cond_drop, "min_snr_gamma": self.min_snr_gamma, "prediction": self.prediction.value}

    def num_examples(self) -> int:
        return len(self.cache)

    def batch(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices, dtype=torch.int64)

    def drop_mask(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """True where the caption is replaced by the empty prompt. Shapes: -> (B,) bool."""
        return torch.rand(batch_size, generator=generator, device=generator.device) < self.cond_drop

    def loss(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Steps 1-4 of the module docstring. Shapes: indices (B,) -> scalar."""
        B, device = len(indices), self.cache.mean.device
        z0 = self.cache.latents(indices.to(device), generator)  # (B, C, h, w)
        context = self.context(indices.to(device), self.drop_mask(B, generator).to(device))  # (B, L, width)
        t = torch.randint(0, self.schedule.num_train_timesteps, (B,), generator=generator,
                          device=generator.device).to(device)
        noise = torch.randn(z0.shape, generator=generator, device=generator.device).to(device)
        z_t = self.unet_input(self.schedule.q_sample(z0, t, noise), indices.to(device), generator)
        target = noise if self.prediction is PredictionType.EPSILON else self.schedule.velocity(z0, noise, t)
        prediction = self.model.unet(z_t, t, context).float()
        if self.min_snr_gamma is None:
            return F.mse_loss(prediction, target)
        weight = min_snr_weight(self.schedule.snr(t), self.min_snr_gamma, self.prediction)  # (B,)
        return ((prediction - target).pow(2).flatten(1).mean(1) * weight).mean()

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """Step 2: the captions' contexts, the empty prompt's where dropped. Shapes: (B,), (B,) bool -> (B, L, D).
        Other conditions override this (:mod:`nanoldm.training.ldm_conditions`)."""
        context = self.cache.context(indices)
        return torch.where(drop[:, None, None], self.cache.empty.expand_as(context), context)

    def unet_input(self, z_t: torch.Tensor, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The UNet's input: z_t itself; an inpainting task appends its concat channels here."""
        return z_t

    def sample(self, step: int) -> Image.Image:
        """One image per sample prompt (seed 0, CFG), in a row, drawn with the weights now in the UNet."""
        unet = self.model.unet
        was_training = unet.training
        parts = ModelParts.from_model(self.model, self.schedule)
        opts = GenerateOptions(steps=self.sample_steps, cfg_scale=self.cfg_scale, seed=0, width=parts.image_size,
                               height=parts.image_size)
        opts.validate(parts.latent_factor)
        try:
            unet.eval()
            images = [tensor_to_pil(txt2img(parts, dataclasses.replace(opts, prompt=p))[0])[0]
                      for p in self.sample_prompts]
        finally:
            unet.train(was_training)
        return image_grid(images, columns=len(images))


def freeze(module: torch.nn.Module) -> None:
    module.eval()
    module.requires_grad_(False)


def image_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Paste equally sized images into rows of ``columns``."""
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (w * columns, h * rows), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % columns) * w, (i // columns) * h))
    return grid


def with_prediction(model: LatentDiffusion, prediction: PredictionType) -> LatentDiffusion:
    """The model with its config saying what the UNet is trained to predict (samplers read it)."""
    schedule = dataclasses.replace(model.config.schedule, prediction_type=prediction)
    model.config = dataclasses.replace(model.config, schedule=schedule)
    return model


def load_data(data: str, size: int, *, count: int = 2000, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Training images and captions: ``"shapes"`` (the shapes world, ``count`` images from ``seed``) or an
    image folder (every image needs a caption). Shapes: -> pixels (N, 3, size, size) uint8, N captions."""
    if data == "shapes":
        from nanoldm.data.shapes import IMAGE_SIZES, ShapesWorld

        native = min([s for s in IMAGE_SIZES if s >= size], default=max(IMAGE_SIZES))
        world = ShapesWorld(size=native, seed=seed, count=count)
        samples = list(world)
        pixels = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)
        if native != size:  # area-average down to the training size
            pixels = F.interpolate(pixels.float(), size=(size, size), mode="area").round().to(torch.uint8)
        return pixels.contiguous(), [s.caption for s in samples]
    from nanoldm.data.folder import ImageFolder

    folder = ImageFolder(data, size=size, require_captions=True)
    pixels = torch.stack([((folder[i]["image"] + 1.0) * 127.5).round().to(torch.uint8) for i in range(len(folder))])
    return pixels, list(folder.captions)


def base_model(args: argparse.Namespace) -> LatentDiffusion:
    """``--model PATH``, or random networks of the ``--init`` preset built from ``--seed``."""
    if args.model:
        from nanoldm.checkpoint.load import load_model

        return load_model(args.model)
    from nanoldm.text.tokenizer import CLIPTokenizer

    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        return LatentDiffusion.from_config(PRESETS[args.init], tokenizer=CLIPTokenizer.default())


def save_final(model: LatentDiffusion, checkpoint: Path, path: Path) -> None:
    """Write the whole model; the UNet takes the EMA weights from the training checkpoint when it has them."""
    from nanoldm.checkpoint.save import save_model
    from nanoldm.training.state import load_ema_weights

    load_ema_weights(model.unet, "unet", checkpoint)
    save_model(model, path, overwrite=True)


def register(sub: argparse._SubParsersAction) -> None:
    from nanoldm.cli.train import add_data_arguments, add_loop_arguments

    p = sub.add_parser("ldm", help="a text-conditioned latent diffusion UNet (frozen VAE and text encoder)")
    add_data_arguments(p, count=2000, size=None)
    base = p.add_mutually_exclusive_group()
    base.add_argument("--model", default=None, help="base model whose VAE and text encoder are used (and UNet "
                                                    "architecture; its UNet weights are the starting point)")
    base.add_argument("--init", choices=sorted(PRESETS), default="shapes_tiny",
                      help="without --model: random networks of this preset (smoke tests only)")
    p.add_argument("--prediction", choices=sorted(PREDICTIONS), default="eps")
    p.add_argument("--condition", choices=CONDITIONS, default="text",
                   help="text: captions; class / layout: a jointly trained condition module (saved to OUT/"
                        "condition.safetensors) replaces the text encoder; mask: an inpainting UNet (4+1+4 inputs)")
    add_latent_arguments(p, cond_drop=0.1)
    add_loop_arguments(p, steps=5000, batch_size=64, lr=1e-4)
    p.set_defaults(run=run)


def add_base_model_argument(p: argparse.ArgumentParser, *, role: str) -> None:
    """``--model``, defaulting to the built-in shapes model, for finetuning trainers."""
    p.add_argument("--model", default=None, help=f"the base model: our .safetensors, an SD 1.x file or a diffusers "
                                                 f"folder (default: the built-in shapes model); {role}")


def add_latent_arguments(p: argparse.ArgumentParser, *, cond_drop: float) -> None:
    """The options of every trainer on a frozen VAE's latent cache (ldm, embedding, hypernetwork)."""
    p.add_argument("--cond-drop", type=float, default=cond_drop, help="probability of training on the empty prompt")
    p.add_argument("--cache", default=None, help="latent cache folder (default: OUT/cache)")
    p.add_argument("--min-snr-gamma", type=float, default=None, metavar="G",
                   help="Min-SNR loss weighting min(SNR, G) / SNR (Hang et al. 2023; 5 is usual); default: off")
    p.add_argument("--sample-prompt", action="append", default=None, help="prompt of the sample grid (repeat)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")


def latent_loss_options(args: argparse.Namespace) -> dict:
    """The :class:`LDMTask` keywords that :func:`add_latent_arguments` defines."""
    return {"cond_drop": args.cond_drop, "min_snr_gamma": args.min_snr_gamma}


def run(args: argparse.Namespace) -> None:
    from nanoldm.cli.train import loop_config
    from nanoldm.training.loop import train

    from nanoldm.training.ldm_conditions import (CONDITION_FILE, conditioned_task, save_condition,
                                                 to_inpainting)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = with_prediction(base_model(args), PREDICTIONS[args.prediction])
    model = (to_inpainting(model) if args.condition == "mask" else model).to(device)
    size = args.size or model.config.image_size
    model.config = dataclasses.replace(model.config, image_size=size)
    pixels, captions = load_data(args.data, size, count=args.count, seed=args.seed)
    cache, path = load_or_build(pixels, captions, model, args.cache or Path(args.out) / "cache", progress=True)
    print(f"latent cache: {path} ({len(cache)} images, {len(cache.contexts)} distinct captions)")
    if args.condition == "text":
        task = LDMTask(model, cache, **latent_loss_options(args),
                       sample_prompts=tuple(args.sample_prompt) if args.sample_prompt else SAMPLE_PROMPTS)
    else:
        task = conditioned_task(args.condition, model, cache, pixels, args)
    result = train(task, loop_config(args), resume=args.resume)
    save_final(model, result.checkpoint, Path(args.out) / MODEL_FILE)
    if args.condition in ("class", "layout"):
        save_condition(task.condition, result.checkpoint, Path(args.out) / CONDITION_FILE)
    print(f"model: {Path(args.out) / MODEL_FILE} (step {result.step}, loss {result.loss:.4f})")

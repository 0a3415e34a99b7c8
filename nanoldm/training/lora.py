"""``nanoldm train lora``: a LoRA (Hu et al. 2021) trained on a frozen model, written as kohya's ``sd-scripts`` writes
it, so A1111, ComfyUI and diffusers load it.

The loss is the LDM's (:class:`~nanoldm.training.ldm.LDMTask`: cached latents, noise at a random step, eps or v
target, Min-SNR, caption dropout), with the adapters of :mod:`nanoldm.training.lora_network` hooked onto the
frozen UNet's (and text encoder's) weights. Only the adapters train; they are the one module the training checkpoint holds and
``--resume`` restores. With ``text`` among the targets the captions go through the (adapted) text encoder every
step, the dropped ones as the empty prompt; otherwise the latent cache's contexts serve.

Initial weights come from the seed (``down`` kaiming-uniform, ``up`` zero), so a run is reproducible and a resumed
one ends with the same weights, bit for bit, as one never stopped. The run's start time, recorded in the file, is
kept in ``OUT/lora_run.json``, so a resumed run records when the run began.

At the end ``OUT/NAME.safetensors`` is written through :func:`~nanoldm.finetune.lora_file.save_lora` (EMA weights
when EMA is on): kohya's layout and metadata (``ss_network_module`` ``networks.lora``, ``ss_network_dim``,
``ss_network_alpha``, ``ss_base_model_version``, ``ss_training_started_at``, ``ss_steps``, ...), or with
``format="diffusers"`` the PEFT layout of diffusers' ``load_lora_weights``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from nanoldm.checkpoint.formats import write_text
from nanoldm.data.latents import LatentCache
from nanoldm.data.sources import Captions, ImageSource
from nanoldm.finetune.lora_file import FORMATS, save_lora
from nanoldm.model import LatentDiffusion
from nanoldm.text.encode import chunk_prompt, empty_chunk, encode_chunks, pad_chunks
from nanoldm.training.hypernetwork import clean_name
from nanoldm.training.latent_setup import LatentOptions, latent_cache, prepare_model
from nanoldm.training.ldm import SAMPLE_PROMPTS, LDMTask, evaluating, freeze
from nanoldm.training.lora_metadata import kohya_metadata
from nanoldm.training.lora_network import LoraNetwork, LoraSpec
from nanoldm.training.loop import CHECKPOINT, TrainConfig, train
from nanoldm.training.state import load_ema_weights

now = time.time  # the clock of the run's start and end times (a test stops it)
RUN_FILE = "lora_run.json"  # what the exported file records of the run that a resume must keep (its start time)


class LoraTask(LDMTask):
    """The LDM task with the UNet and text encoder frozen and ``network``'s adapters on their weights;
    ``modules()`` is the network alone. ``captions`` (one per cached image) are needed when the text encoder is
    adapted. Call :meth:`finish` after training to take the adapters off the model."""

    def __init__(self, model: LatentDiffusion, cache: LatentCache, network: LoraNetwork, *,
                 captions: list[str] | None = None, **kwargs):
        super().__init__(model, cache, **kwargs)
        freeze(model.unet)
        self.network = network
        network.requires_grad_(True)
        network.train()
        network.attach()  # after freezing: the adapters become submodules of the layers they change
        self.chunks = None
        if "text" in network.spec.targets:
            if captions is None or len(captions) != len(cache):
                raise ValueError("a text-encoder LoRA needs one caption per cached image")
            tokenizer = model.tokenizer
            chunks = pad_chunks(tokenizer, [chunk_prompt(tokenizer, c) for c in captions])
            self.chunks, self.empty_chunks = chunks, [empty_chunk(tokenizer)] * len(chunks[0])

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"lora": self.network}

    def options(self) -> dict:
        spec = self.network.spec
        return {**super().options(), "lora": {"rank": spec.rank, "alpha": spec.alpha, "targets": list(spec.targets),
                                              "conv_rank": spec.conv_rank, "conv_alpha": spec.conv_alpha,
                                              "rank_dropout": spec.rank_dropout}}

    def context(self, indices: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """The cache's contexts, or with a text LoRA the captions (the empty prompt where dropped) through the
        adapted text encoder. Shapes: (B,), (B,) bool -> (B, L, width)."""
        if self.chunks is None:
            return super().context(indices, drop)
        batch = [self.empty_chunks if d else self.chunks[i] for i, d in zip(indices.tolist(), drop.tolist())]
        return encode_chunks(self.model.text_encoder, batch)

    def sample(self, step: int) -> Image.Image:
        """The LDM's sample row, drawn with the LoRA on and its rank dropout off."""
        with evaluating(self.network):
            return super().sample(step)

    def finish(self, checkpoint: Path | None = None) -> LoraNetwork:
        """Take the adapters off the model; they take the EMA weights when ``checkpoint`` holds them."""
        self.network.detach()
        if checkpoint is not None:
            load_ema_weights(self.network, "lora", checkpoint)
        return self.network


@dataclass(frozen=True)
class LoraTraining:
    """What ``train lora`` trains: the file's name (A1111's rule: letters, digits, ``._- ``), the adapters
    (:class:`LoraSpec`), the file layout (``kohya`` or ``diffusers``); ``latent``: the options shared with the
    other latent trainers (no caption dropout by default, as kohya)."""
    name: str = "lora"
    spec: LoraSpec = field(default_factory=LoraSpec)
    format: str = "kohya"
    latent: LatentOptions = field(default_factory=lambda: LatentOptions(cond_drop=0.0))

    def __post_init__(self):
        clean_name(self.name)
        if self.format not in FORMATS:
            raise ValueError(f"unknown LoRA format {self.format!r}; choose one of {', '.join(FORMATS)}")


def run_started_at(out: Path, resume: bool) -> float:
    """The run's start time (unix seconds): read back from OUT/lora_run.json on a resume, else now (and
    recorded)."""
    path = out / RUN_FILE
    if (out / CHECKPOINT).exists() and not resume:  # the loop refuses to start; keep that run's record too
        raise FileExistsError(f"{out / CHECKPOINT} exists: resume it (--resume) or choose another output folder")
    if resume and path.exists():
        return float(json.loads(path.read_text())["training_started_at"])
    started = now()
    out.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"training_started_at": started}) + "\n")
    return started


def train_lora(model: LatentDiffusion, data: ImageSource, loop: TrainConfig, options: LoraTraining, *,
               base: Path | None = None, resume: bool = False) -> Path:
    """Train a LoRA on the frozen ``model`` (every image captioned). ``base``: the model's file, named in the
    metadata. Writes OUT/NAME.safetensors and returns its path."""
    name, out = clean_name(options.name), Path(loop.out_dir)
    model = prepare_model(model, data.size, options.latent.device)
    images = data.load(model.config.image_size, seed=loop.seed, captions=Captions.REQUIRED)
    cache = latent_cache(model, images.pixels, images.captions, options.latent, out)
    with torch.random.fork_rng():  # the same initial weights from the seed (a resumed run then loads its own)
        torch.manual_seed(loop.seed)
        network = LoraNetwork(model, options.spec)
    task = LoraTask(model, cache, network, captions=images.captions, **options.latent.task_options(),
                    sample_prompts=options.latent.sample_prompts or SAMPLE_PROMPTS)
    started = run_started_at(out, resume)
    try:
        result = train(task, loop, resume=resume)
    finally:
        network.detach()
    task.finish(result.checkpoint)
    metadata = kohya_metadata(model, options, loop, name=name, steps=result.step, images=len(cache),
                              started_at=started, finished_at=now(), base=base)
    path = out / f"{name}.safetensors"
    save_lora(path, network.lora_weights(), metadata, format=options.format)
    size = path.stat().st_size / 2**20
    print(f"lora: {path} ({len(network.paths)} layers, {size:.2f} MiB, step {result.step}, loss {result.loss:.4f})")
    return path

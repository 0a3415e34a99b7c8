"""``train_ldm``: the LDM trainer (:mod:`nanoldm.training.ldm`) as one function, for any condition
(:mod:`nanoldm.training.ldm_conditions`). Usable from Python with no command line::

    model = random_model("shapes_tiny", seed=0)          # or load_model(path)
    train_ldm(model, ImageSource("shapes", count=2000), TrainConfig(steps=5000, out_dir="runs/ldm"),
              LDMOptions(prediction=PredictionType.V))

``nanoldm train ldm`` (:mod:`nanoldm.cli.train_ldm`) builds the same call from its flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nanoldm.config import PredictionType
from nanoldm.data.sources import Captions, ImageSource
from nanoldm.model import LatentDiffusion
from nanoldm.training.latent_setup import LatentOptions, latent_cache, prepare_model, save_final
from nanoldm.training.ldm import MODEL_FILE, SAMPLE_PROMPTS, LDMTask, with_prediction
from nanoldm.training.ldm_conditions import Condition, conditioned_task, save_trained_condition, to_inpainting
from nanoldm.training.loop import TrainConfig, train


@dataclass(frozen=True)
class LDMOptions:
    """``train ldm``'s own options; ``latent`` those it shares with the finetuning trainers."""
    prediction: PredictionType = PredictionType.EPSILON
    condition: Condition = Condition.TEXT
    latent: LatentOptions = field(default_factory=LatentOptions)


def train_ldm(model: LatentDiffusion, data: ImageSource, loop: TrainConfig, options: LDMOptions = LDMOptions(), *,
              resume: bool = False) -> Path:
    """Train ``model``'s UNet on ``data`` (every image captioned; the shapes world is drawn from ``loop.seed``).
    Writes OUT/model.safetensors (and OUT/condition.safetensors for class and layout) and returns the model file."""
    model = with_prediction(model, options.prediction)
    model = prepare_model(to_inpainting(model) if options.condition is Condition.MASK else model, data.size,
                          options.latent.device)
    out = Path(loop.out_dir)
    images = data.load(model.config.image_size, seed=loop.seed, captions=Captions.REQUIRED)
    cache = latent_cache(model, images.pixels, images.captions, options.latent, out)
    if options.condition is Condition.TEXT:
        task = LDMTask(model, cache, **options.latent.task_options(),
                       sample_prompts=options.latent.sample_prompts or SAMPLE_PROMPTS)
    else:
        task = conditioned_task(options.condition, model, cache, images.pixels, data, seed=loop.seed,
                                options=options.latent)
    result = train(task, loop, resume=resume)
    save_final(model, result.checkpoint, out / MODEL_FILE)
    save_trained_condition(task, result.checkpoint, out)
    print(f"model: {out / MODEL_FILE} (step {result.step}, loss {result.loss:.4f})")
    return out / MODEL_FILE

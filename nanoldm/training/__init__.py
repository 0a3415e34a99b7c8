"""Training: one model-agnostic loop (:func:`train`) and its resumable checkpoint format, and one typed function
per trainer, usable from Python with no command line: ``vae.train_vae``, ``clip.train_clip``,
``ldm_trainer.train_ldm``, ``embedding.train_embedding``, ``hypernetwork.train_hypernetwork``; ``recipe.run_recipe``
runs the whole chain (``nanoldm train all``). Each takes an ``ImageSource``, a ``TrainConfig`` and its own
options dataclass; ``nanoldm.cli.train_*`` only turn flags into those."""
from nanoldm.training.ema import EMA
from nanoldm.training.loop import ExampleOrder, Task, TrainConfig, TrainResult, learning_rate, train
from nanoldm.training.state import read_checkpoint

__all__ = ["EMA", "ExampleOrder", "Task", "TrainConfig", "TrainResult", "learning_rate", "read_checkpoint", "train"]

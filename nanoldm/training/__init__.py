"""Training: one model-agnostic loop (:func:`train`) and its resumable checkpoint format."""
from nanoldm.training.ema import EMA
from nanoldm.training.loop import ExampleOrder, Task, TrainConfig, TrainResult, learning_rate, train
from nanoldm.training.state import read_checkpoint

__all__ = ["EMA", "ExampleOrder", "Task", "TrainConfig", "TrainResult", "learning_rate", "read_checkpoint", "train"]

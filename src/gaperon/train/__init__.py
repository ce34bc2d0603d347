"""Pretraining: recipes, the loop, optimizer and schedules, precision, parallelism, checkpoints."""

from gaperon.train.config import Recipe, load_recipe
from gaperon.train.distributed import EXIT_REQUEUE
from gaperon.train.loop import TrainingDiverged, TrainResult, train

__all__ = ["EXIT_REQUEUE", "Recipe", "TrainResult", "TrainingDiverged", "load_recipe", "train"]

"""Pretraining: recipes, the loop, optimizer and schedules, precision, parallelism, checkpoints."""

from gaperon.errors import EXIT_REQUEUE, TrainingDiverged
from gaperon.train.config import Recipe, load_recipe
from gaperon.train.loop import TrainResult, train

__all__ = ["EXIT_REQUEUE", "Recipe", "TrainResult", "TrainingDiverged", "load_recipe", "train"]

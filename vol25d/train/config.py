"""What a training path produced (:class:`TrainResult`), and the settings of a training path
(:class:`TrainConfig`, which lives with every other setting in :mod:`vol25d.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vol25d.settings import DEFAULT_EPOCHS, DEFAULT_LR, FINE_TUNE_LR, FINE_TUNE_MODEL_SETTINGS, TrainConfig

__all__ = ["TrainConfig", "TrainResult", "FINE_TUNE_LR", "FINE_TUNE_MODEL_SETTINGS", "DEFAULT_EPOCHS", "DEFAULT_LR"]


@dataclass
class TrainResult:
    """What a training path produced: ``epochs`` is the last epoch done (``config.epochs`` unless it stopped
    for time: then ``out_of_time`` is true and ``resume`` continues it)."""

    checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_dice: float
    best_epoch: int
    seconds: float
    out_of_time: bool = False

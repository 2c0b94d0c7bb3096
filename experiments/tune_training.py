"""One training configuration on a phantom dataset: path 1 (15 epochs), optionally path 2, then the mean Dice
on held-out phantoms. The runs of experiments/results/tuning.md were made with it.

Usage:
    python experiments/tune_training.py NAME DATA TEST '{"lr": 0.003, "loss": "dice+bce"}' '{"head_pool": "none"}' 5

``DATA`` and ``TEST`` are phantom datasets (``vol25d make-phantoms``); the two JSON arguments are
:class:`~vol25d.train.TrainConfig` and :class:`~vol25d.model.ModelConfig` fields; the last number is the
path-2 epochs (0: none). Runs go to ``/tmp/vol25d-tune/NAME``. Prints one line of figures.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from vol25d.data.dataset import load_dataset
from vol25d.infer import Predictor
from vol25d.io import read_volume
from vol25d.metrics import dice
from vol25d.model import ModelConfig
from vol25d.train import TrainConfig, train


def held_out_dice(checkpoint: Path, test: Path) -> float:
    """Mean Dice of the checkpoint's labels on every case of the ``test`` dataset."""
    predictor = Predictor.load(checkpoint, "cpu")
    scores = []
    for case in load_dataset(test).cases:
        images = [read_volume(path) for path in case.image_paths]
        labels = predictor.labels(predictor.probabilities(images))
        scores.append(dice(labels > 0, read_volume(case.label_path).array > 0))
    return float(np.mean(scores))


def main() -> None:
    name, data, test = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    train_settings, model_settings, path2_epochs = json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
    out = Path("/tmp/vol25d-tune") / name
    start = time.perf_counter()
    result = train(data, out, TrainConfig(path=1, epochs=15, device="cpu", **train_settings),
                   model_config=ModelConfig(**model_settings), quiet=True)
    line = (f"{name} {train_settings} {model_settings} path 1: validation {result.best_dice:.3f}, held out "
            f"{held_out_dice(result.checkpoint, test):.3f} ({time.perf_counter() - start:.0f} s)")
    if path2_epochs:
        second = train(data, out, TrainConfig(path=2, epochs=path2_epochs, device="cpu", **train_settings),
                       init=result.checkpoint, quiet=True)
        line += f"; path 2: validation {second.best_dice:.3f}, held out {held_out_dice(second.checkpoint, test):.3f}"
    print(line, flush=True)


if __name__ == "__main__":
    main()

"""Path 1 then path 2 in one run folder, under a time limit, picked up where it stopped when called again.

:func:`train_both_paths` is what a session with a hard wall-clock limit (a Kaggle notebook) runs: each call
looks at the run folder, skips a path whose ``pathN_last.pt`` has all its epochs, resumes the one in progress,
starts the next, and stops cleanly before ``deadline`` (:func:`~vol25d.train.loop.train`'s ``deadline``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vol25d.checkpoint import Checkpoint, RunFolder
from vol25d.model import ModelConfig
from vol25d.train.config import TrainConfig, TrainResult
from vol25d.train.loop import train

log = logging.getLogger(__name__)

__all__ = ["BothPaths", "train_both_paths"]


@dataclass
class BothPaths:
    """What :func:`train_both_paths` got done: each path's result (``None``: not started in any call so far), and
    whether this call trained at all (``trained``; false when both were done already, or past the deadline)."""

    path1: TrainResult | None
    path2: TrainResult | None
    trained: bool = False

    @property
    def done(self) -> bool:
        """Whether path 2 has all its epochs (and so path 1 too)."""
        return self.path2 is not None and not self.path2.out_of_time


def _finished(run: RunFolder, config: TrainConfig) -> TrainResult | None:
    """The result of path ``config.path`` if its ``pathN_last.pt`` holds all ``config.epochs`` epochs, else ``None``."""
    last = run.last(config.path)
    if not last.exists():
        return None
    saved = Checkpoint.load(last)
    epochs = config.epochs if config.epochs is not None else saved.train_config.get("epochs")
    if saved.epoch is None or epochs is None or saved.epoch < epochs:
        return None
    return TrainResult(run.best(config.path), last, int(saved.epoch), float(saved.best_dice), int(saved.best_epoch), 0.0)


def train_both_paths(
    data_dir: str | Path,
    run_dir: str | Path,
    path1: TrainConfig,
    path2: TrainConfig,
    *,
    model_config: ModelConfig | None = None,
    preprocess_options: dict | None = None,
    deadline: float | None = None,
    on_best: Callable[[Path, int, float], None] | None = None,
    start_anyway: bool = False,
    quiet: bool = False,
) -> BothPaths:
    """Train path 1 and then path 2 (from path 1's best checkpoint) in ``run_dir``, resuming what a previous call
    left unfinished there.

    A path whose ``pathN_last.pt`` already holds its ``epochs`` is skipped; one with fewer is resumed
    (``resume=True``); a missing one is started. No path starts once ``deadline`` has passed (unless
    ``start_anyway``: then the first path to train runs at least one epoch), and a running one stops after the
    epoch past which the next would end beyond it; calling again with the same settings goes on.

    Args:
        data_dir: the dataset.
        run_dir: the run folder of both paths.
        path1, path2: their :class:`TrainConfig` (``path`` 1 and 2); keep them the same between calls.
        model_config, preprocess_options: path 1's, as in :func:`~vol25d.train.loop.train`.
        deadline: a :func:`time.time` to stop by, or ``None``.
        on_best: passed to each path's :func:`~vol25d.train.loop.train`.
        start_anyway: train one epoch even when ``deadline`` has passed, so that every session makes progress
            (a session's first call), however short its time limit.
        quiet: no progress bars.

    Returns:
        :class:`BothPaths`; ``done`` tells whether both paths have all their epochs.
    """
    run = RunFolder(run_dir)
    results: list[TrainResult | None] = []
    trained = False
    for config, options in ((path1, dict(model_config=model_config, preprocess_options=preprocess_options)),
                            (path2, dict(init=run.best(1)))):
        result = _finished(run, config)
        if result is None and (deadline is None or time.time() < deadline or (start_anyway and not trained)):
            resume = run.last(config.path).exists()
            if resume:
                log.info("path%d: resuming %s", config.path, run.last(config.path))
            result = train(data_dir, run_dir, config, resume=resume, quiet=quiet, deadline=deadline, on_best=on_best,
                           **options)
            trained = True
        results.append(result)
        if result is None or result.out_of_time:
            break
    results += [None] * (2 - len(results))
    return BothPaths(*results, trained)

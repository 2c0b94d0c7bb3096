"""Where a training path's model and preprocessing plan come from.

- Path 1: a fresh model (its preprocessing planned from the data later), or ``--init CKPT`` to fine-tune a
  trained model (its weights, model settings and preprocessing plan), or ``--resume`` (``path1_last.pt``).
- Path 2: the path-1 checkpoint ``--init`` names, U frozen; or ``--resume`` (``path2_last.pt``), with the
  preprocessing of ``--init`` either way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vol25d import distributed
from vol25d.checkpoint import Checkpoint, RunFolder
from vol25d.data.dataset import DatasetInfo
from vol25d.data.preprocess import PreprocessConfig
from vol25d.errors import InputError
from vol25d.model import ModelConfig, Random25DUNet
from vol25d.train.config import FINE_TUNE_MODEL_SETTINGS, TrainConfig

log = logging.getLogger(__name__)

__all__ = ["resumed_checkpoint", "starting_model"]


def resumed_checkpoint(run: RunFolder, path: int, world: int) -> Checkpoint:
    """The ``pathN_last.pt`` that ``--resume`` continues, written by a run on as many processes as this one."""
    last = run.last(path)
    if not last.exists():
        raise InputError(f"there is no {last} to resume from; run without --resume to start path {path}")
    resumed = Checkpoint.load(last)
    saved_world = resumed.resume.world_size if resumed.resume else 1
    if saved_world != world:
        raise InputError(f"{last} was saved by a run on {saved_world} process(es) but this one has {world}; resume "
                         "with as many (torchrun --nproc_per_node), or start a new run folder")
    return resumed


def starting_model(config: TrainConfig, dataset: DatasetInfo, model_config: ModelConfig | None,
                   init: str | Path | None, resumed: Checkpoint | None, source: Path | None,
                   ) -> tuple[Random25DUNet, PreprocessConfig | None]:
    """The model a path starts from and its preprocessing plan (``None``: plan it from the data).

    ``resumed`` is the ``pathN_last.pt`` of ``--resume`` (``source`` its file), else ``None``; the settings
    obey :func:`vol25d.settings.check_start` (path 2 has an ``init``).
    """
    if config.path == 1 and resumed is not None:
        return resumed.model(source), PreprocessConfig.from_dict(resumed.preprocess)
    start = None
    if init is not None:
        start = Checkpoint.load(init)
        start.check_fits(dataset.channel_names, dataset.class_names, dataset.root, init)
    if config.path == 2:  # U frozen, the preprocessing of the path-1 run
        model = (resumed or start).model(source if resumed else init)
        model.freeze_unet()
        return model, PreprocessConfig.from_dict(start.preprocess)
    if start is not None:
        if distributed.is_main():
            log.info("path1: fine-tuning %s (its model settings and preprocessing) at lr %.2g", init, config.lr)
        return _fine_tune_model(start, Path(init), model_config), PreprocessConfig.from_dict(start.preprocess)
    settings = (model_config or ModelConfig()).to_dict()
    settings.update(in_channels=len(dataset.channel_names), out_channels=len(dataset.class_names))
    return Random25DUNet.from_config(ModelConfig(**settings)), None


def _fine_tune_model(start: Checkpoint, init: Path, model_config: ModelConfig | None) -> Random25DUNet:
    """Path 1 from a trained checkpoint: its model with its weights, U trainable (also after path 2).

    ``model_config`` may change only :data:`FINE_TUNE_MODEL_SETTINGS`; a setting counts as asked for where it
    differs from both ModelConfig's default and the checkpoint's.
    """
    model = start.model(init)
    if model_config is not None:
        given, default, trained = model_config.to_dict(), ModelConfig().to_dict(), model.config.to_dict()
        changed = {k: v for k, v in given.items()
                   if v != default[k] and v != trained[k] and k not in ("in_channels", "out_channels")}
        fixed = sorted(set(changed) - set(FINE_TUNE_MODEL_SETTINGS))
        if fixed:
            raise InputError(f"fine-tuning keeps the model settings of {init}; drop {fixed} (only "
                             f"{', '.join(FINE_TUNE_MODEL_SETTINGS)} may change)")
        if changed:
            state = model.state_dict()
            model = Random25DUNet.from_config(ModelConfig.from_dict({**model.config.to_dict(), **changed}))
            model.load_state_dict(state)
    model.unfreeze_unet()
    return model

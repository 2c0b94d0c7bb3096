"""The settings of a training path (:class:`TrainConfig`) and what a path produced (:class:`TrainResult`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vol25d.data.augment import AugmentConfig
from vol25d.errors import InputError
from vol25d.model import DEFAULT_VIEW_CHUNK, check_memory_controls

__all__ = ["TrainConfig", "TrainResult", "FINE_TUNE_LR", "FINE_TUNE_MODEL_SETTINGS", "DEFAULT_EPOCHS"]

# Model settings a fine-tuning run may change: none of them shapes a weight.
FINE_TUNE_MODEL_SETTINGS = ("directions", "views")
# `vol25d train --path 1 --init CKPT` without --lr: a tenth of the default 3e-3, so that fine-tuning on a few
# cases of a new scanner adjusts the trained weights rather than starting over from them.
FINE_TUNE_LR = 3e-4
# Epochs of path 1 and path 2 when TrainConfig.epochs is None, by the device the path trains on. On the CPU,
# what trains 12 phantoms of 48³ (both paths) in minutes on two cores, where more epochs add little (the
# figures: docs/benchmarks.md, "CPU defaults across generators"); on a GPU, the long schedule.
DEFAULT_EPOCHS = {"cpu": {1: 20, 2: 5}, "cuda": {1: 100, 2: 100}}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training path (saved in ``config.yaml`` and the checkpoints).

    Attributes:
        path: 1 (random views, U trainable) or 2 (all views, U frozen, trains F and T).
        epochs: passes over the training cases; ``None`` (the default) takes :data:`DEFAULT_EPOCHS` of the path
            and of the device it trains on (:meth:`for_device`).
        steps_per_case: optimiser steps per training case per epoch (path 1: each on its own random views
            and augmentation; path 2: on the cached views of all ``m`` directions).
        lr: peak learning rate of AdamW for U (F and T use ``small_lr_factor`` × it in path 1; path 2 trains
            them at ``lr``); warm-up
            over the first 5 % of steps, then cosine decay to 0. Default 3e-3 (docs/method.md says why).
        weight_decay: AdamW's decoupled weight decay.
        loss: ``"dice+bce"`` (MONAI ``DiceLoss`` plus BCE on the 3-D output, the default: BCE keeps a gradient
            where Dice alone stalls; docs/method.md) or ``"dice"``.
        small_lr_factor: path 1's learning rate of F and T (and the explained reconstruction's margin and
            softness) as a multiple of U's: a handful of parameters, each with a scale of its own.
        view_loss_weight: weight of the auxiliary Dice of U's views against the label's MIPs (path 1 only).
        train_head_in_path1: whether T trains in path 1 too (it always trains in path 2).
        val_fraction: share of the cases held out for validation (split by case, seeded).
        amp: bf16 autocast on CUDA.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
        seed: seeds weights, the split, the order of cases, the drawn directions and the augmentation.
        augment: path-1 augmentation (path 2 trains on U's cached views, so none there).
        view_chunk: views pushed through U at once when all ``m`` directions are used (validation, path 2's
            view cache): a memory control, not saved with the model.
        checkpoint_views: path 1: recompute U's activations in the backward over chunks of this many views
            (activation checkpointing; less memory, a second forward of U); ``0`` keeps them.
    """

    path: Literal[1, 2] = 1
    epochs: int | None = None
    steps_per_case: int = 12
    lr: float | None = None
    small_lr_factor: float = 10.0
    weight_decay: float = 1e-4
    loss: Literal["dice", "dice+bce"] = "dice+bce"
    view_loss_weight: float = 1.0
    train_head_in_path1: bool = True
    val_fraction: float = 0.2
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    view_chunk: int = DEFAULT_VIEW_CHUNK
    checkpoint_views: int = 0

    def __post_init__(self):
        if self.path not in (1, 2):
            raise InputError(f"path must be 1 or 2; got {self.path!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise InputError(f"epochs must be a whole number ≥ 1 (or unset for the device's default); got {self.epochs!r}")
        if not self.small_lr_factor > 0:
            raise InputError(f"small_lr_factor must be > 0; got {self.small_lr_factor}")
        if self.steps_per_case < 1:
            raise InputError(f"steps_per_case must be ≥ 1; got {self.steps_per_case}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1; got {self.val_fraction}")
        if self.loss not in ("dice", "dice+bce"):
            raise InputError(f"loss must be 'dice' or 'dice+bce'; got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        try:
            check_memory_controls(self.view_chunk, self.checkpoint_views)
        except ValueError as error:
            raise InputError(str(error)) from None
        if self.lr is None:
            object.__setattr__(self, "lr", 3e-3)
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))

    def for_device(self, device) -> TrainConfig:
        """This config with its epochs set: as given, else :data:`DEFAULT_EPOCHS` of the path on ``device``'s
        type (``"cuda"`` or ``"cpu"``; a ``torch.device`` or its name)."""
        if self.epochs is not None:
            return self
        kind = "cuda" if str(device).startswith("cuda") else "cpu"
        return dataclasses.replace(self, epochs=DEFAULT_EPOCHS[kind][self.path])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a training path produced."""

    checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_dice: float
    best_epoch: int
    seconds: float

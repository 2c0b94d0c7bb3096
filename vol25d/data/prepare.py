"""Cases from a dataset folder → the model's tensors: read the files, plan the preprocessing from the
training images (path 1) or take it from a checkpoint, and preprocess every case once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from vol25d.data.dataset import Case, DatasetInfo
from vol25d.data.planning import plan_from_volumes, with_voxel_cap
from vol25d.data.preprocess import PreprocessConfig, RestoreInfo, preprocess_image, preprocess_label
from vol25d.io import read_volume
from vol25d.progress import track

log = logging.getLogger(__name__)

__all__ = ["PreparedCase", "read_case_images", "prepare_cases"]


@dataclass
class PreparedCase:
    """One preprocessed case: ``image`` float32 ``(C, D, H, W)``, ``label`` uint8 ``(K, D, H, W)``."""

    name: str
    image: torch.Tensor
    label: torch.Tensor | None
    info: RestoreInfo


def read_case_images(case: Case) -> list:
    """The case's channel images as :class:`~vol25d.io.Volume` s (3-D each)."""
    return [read_volume(path) for path in case.image_paths]


def _prepare(case: Case, dataset: DatasetInfo, config: PreprocessConfig) -> PreparedCase:
    image, info = preprocess_image(read_case_images(case), config)
    label = None
    if case.label_path is not None:
        label_volume = read_volume(case.label_path, dtype=None)
        label = preprocess_label(label_volume, info, len(dataset.class_names), dataset.multi_label)
    return PreparedCase(case.name, image, label, info)


def prepare_cases(
    dataset: DatasetInfo,
    train_cases: list[Case],
    val_cases: list[Case],
    config: PreprocessConfig | None = None,
    options: dict | None = None,
    voxel_cap: Callable[[tuple[int, int, int]], int] | None = None,
    *,
    quiet: bool = False,
) -> tuple[list[PreparedCase], list[PreparedCase], PreprocessConfig]:
    """Preprocess the training and validation cases.

    Args:
        dataset: the dataset the cases belong to (class names, multi-label flag).
        train_cases, val_cases: the split.
        config: the preprocessing to apply; ``None`` plans it from the training images (path 1).
        options: :class:`PreprocessConfig` fields fixed by the user when planning (``max_voxels`` …).
        voxel_cap: when planning without a ``max_voxels`` option, the cap for the planned median shape
            ``(D, H, W)`` at the median spacing (:func:`vol25d.capacity.plan_voxel_cap`); ``None``: the
            default cap.
        quiet: no progress (:mod:`vol25d.progress`) of the reading for the plan and of the preprocessing,
            each cases ``i/N`` with ETA.

    Returns:
        ``(train, val, config)``.
    """
    if config is None:
        options = dict(options or {})
        # A generator: each training image is read, sampled and dropped (read again below), so planning holds
        # one native-size image at a time, not the whole training set.
        images = (read_case_images(case) for case in track(train_cases, "planning: reading the training images",
                                                             logger=log, quiet=quiet))
        if voxel_cap is None or "max_voxels" in options:
            config = plan_from_volumes(images, **options)
        else:
            config = plan_from_volumes(images, **options, max_voxels=0)
            config = with_voxel_cap(config, voxel_cap(config.planned_shape))
        log.info("preprocessing planned: spacing %s mm, median image %s voxels, voxel cap %s",
                 config.target_spacing_mm, "×".join(map(str, config.planned_shape or ())),
                 config.max_voxels or "none")
    prepared = [_prepare(case, dataset, config)
                for case in track([*train_cases, *val_cases], "preprocessing", logger=log, quiet=quiet)]
    return prepared[:len(train_cases)], prepared[len(train_cases):], config

"""``vol25d check-data``: every file of an MSD-layout dataset read and checked, every problem one line that
names the file and the fix (listing the cases is :mod:`vol25d.data.dataset`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vol25d.data.dataset import MIN_IMAGE_SIDE, DatasetInfo, _case_names, _scan
from vol25d.errors import InputError
from vol25d.io import grid_mismatch
from vol25d.progress import track

__all__ = ["check_dataset"]

log = logging.getLogger(__name__)


def check_dataset(root: str | os.PathLike) -> list[str]:
    """Check every file of a dataset; return all problems found, one line each naming the file.

    Checked: ``dataset.json`` (present, valid, ``numTraining`` equal to the number of training cases); every
    case complete (all channels, a label) and every label with an image; every file readable; images 3-D
    and finite (no NaN/Inf); channels and label of a case on the same grid (same shape, origin within
    1e-3 mm, direction cosines within 1e-4, spacing within a relative 1e-4); labels 3-D with values among
    those declared, or — with ``"multi_label": true`` — 4-D ``(X, Y, Z, C)`` with ``C`` the number of
    foreground classes and values 0/1. ``imagesTs`` cases are checked for readability, dimensions,
    finiteness and a common grid.

    Args:
        root: the dataset folder.

    Returns:
        The problems, as lines; empty when the dataset is fine.

    Progress: cases ``i/N`` with ETA (:mod:`vol25d.progress`).
    """
    from vol25d.io import read_volume  # file-format libraries load only when files are read

    root = Path(root)
    info, problems = _scan(root)
    if info is None:
        return problems
    n_cases = len(_case_names(root / "imagesTr", info.file_ending))  # incomplete cases count too
    if info.num_training is None:
        problems.append(f"{root / 'dataset.json'}: has no numTraining; add \"numTraining\": {n_cases}")
    elif info.num_training != n_cases:
        problems.append(f"{root / 'dataset.json'}: numTraining is {info.num_training} but imagesTr holds "
                        f"{n_cases} cases; set it to {n_cases} or add the missing cases")
    allowed = set(info.labels.values())
    for case in track(info.cases + info.test_cases, "check-data", logger=log):
        log.debug("checking case %s", case.name)
        reference = None  # (path, shape, affine) of the case's first readable file
        for path in case.image_paths + ([case.label_path] if case.label_path else []):
            if not path.is_file():
                continue  # already reported by _scan
            is_label = path == case.label_path
            try:
                volume = read_volume(path)
            except (InputError, FileNotFoundError, OSError) as error:
                problems.append(str(error) if str(path) in str(error) else f"{path}: {error}")
                continue
            array = volume.array
            problems += _check_label(path, array, info, allowed) if is_label else _check_image(path, array)
            if reference is None:
                reference = (path, volume.shape, volume.affine)
            else:
                problems += grid_mismatch(path, volume.shape, volume.affine, *reference)
    return problems


def _check_image(path: Path, array: np.ndarray) -> list[str]:
    if array.ndim != 3:
        return [f"{path}: is 4-D with {array.shape[3]} volumes (shape {array.shape}); each channel must be its "
                "own 3-D file (_0000, _0001 …) — split it"]
    if min(array.shape) < MIN_IMAGE_SIDE:
        return [f"{path}: shape {array.shape} has fewer than {MIN_IMAGE_SIDE} voxels along an axis; pass a 3-D volume"]
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        return [f"{path}: has {bad} NaN/Inf voxel(s); replace them (e.g. with 0) and re-save"]
    return []


def _check_label(path: Path, array: np.ndarray, info: DatasetInfo, allowed: set[int]) -> list[str]:
    n_classes = len(info.class_names)
    if info.multi_label:
        if array.ndim == 3 and n_classes == 1:  # read_volume returns a one-volume 4-D map as 3-D
            array = array[..., None]
        if array.ndim != 4 or array.shape[3] != n_classes:
            return [f"{path}: multi-label map must be 4-D (X, Y, Z, {n_classes}), one channel per foreground "
                    f"class; got shape {array.shape}"]
        allowed = {0, 1}
    elif array.ndim != 3:
        return [f"{path}: label must be a 3-D integer map; got shape {array.shape} — for overlapping classes "
                "set \"multi_label\": true in dataset.json"]
    if not np.all(np.isfinite(array)):
        return [f"{path}: label has NaN/Inf voxels; labels must be integers {sorted(allowed)}"]
    values = np.unique(array)
    if np.any(values != np.round(values)):
        return [f"{path}: label has non-integer values (e.g. {values[values != np.round(values)][0]}); "
                f"labels must be integers {sorted(allowed)}"]
    extra = sorted(int(v) for v in values if int(v) not in allowed)
    if extra:
        return [f"{path}: label values {extra} are not declared in dataset.json (allowed {sorted(allowed)}); "
                "fix the label or declare them"]
    return []

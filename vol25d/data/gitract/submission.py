"""Predictions → ``submission.csv`` rows (``id,class,predicted``), written atomically."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from vol25d.data.gitract.reading import CLASSES, _case_day_dirs, read_gitract_test_case
from vol25d.data.gitract.rle import rle_encode

from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.progress import track

log = logging.getLogger(__name__)


def submission_rows(case_day: str, pred: np.ndarray, slice_numbers: Sequence[int]) -> list[tuple[str, str, str]]:
    """Submission rows of one case-day: one per slice and class, empty RLE for an empty mask.

    Args:
        case_day: ``"case123_day20"``.
        pred: ``(X, Y, Z, 3)`` bool/uint8 in the volume order of :func:`read_gitract_test_case`, channels
            :data:`CLASSES`.
        slice_numbers: the slice number of each ``z`` (``len == Z``).

    Returns:
        ``[(id, class, rle), …]`` slice by slice, classes in :data:`CLASSES` order.
    """
    pred = np.asarray(pred)
    if pred.ndim != 4 or pred.shape[3] != len(CLASSES):
        raise InputError(f"{case_day}: prediction must be (X, Y, Z, {len(CLASSES)}); got shape {pred.shape}")
    if pred.shape[2] != len(slice_numbers):
        raise InputError(
            f"{case_day}: prediction has {pred.shape[2]} slices but {len(slice_numbers)} slice numbers were given"
        )
    rows = []
    for z, number in enumerate(slice_numbers):
        slice_id = f"{case_day}_slice_{int(number):04d}"
        for k, name in enumerate(CLASSES):
            rows.append((slice_id, name, rle_encode(pred[:, :, z, k].T)))
    return rows


def write_submission(rows: Iterable[tuple[str, str, str]], path: str | os.PathLike) -> Path:
    """Write ``submission.csv`` (header ``id,class,predicted``) atomically.

    Args:
        rows: ``(id, class, rle)`` tuples, e.g. from :func:`submission_rows`.
        path: the CSV to write; its folder is created.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("id", "class", "predicted"))
        writer.writerows(rows)
    return path


def submission_rows_for_test_set(src: str | os.PathLike, segment) -> list[tuple[str, str, str]]:
    """Segment every test case-day of the competition folder and return its submission rows.

    Each ``src/test/<case>/<case_day>`` is read with :func:`read_gitract_test_case`, passed to ``segment``,
    and its mask encoded with :func:`submission_rows`: one row per slice PNG under ``test/`` and class, the
    ids taken from the file names, in the order of :func:`list_test_slices`.

    Args:
        src: the competition folder. ``test/`` may be absent or empty (Kaggle's public run of a code
            competition notebook): then there are no rows.
        segment: a function from a case-day image :class:`~vol25d.io.Volume` ``(X, Y, Z)`` to its bool/uint8
            mask ``(X, Y, Z, 3)`` on the same grid, channels :data:`CLASSES`; e.g.
            ``lambda image: predictor.labels(predictor.probabilities([image]))`` with a
            :class:`vol25d.infer.Predictor`.

    Returns:
        ``[(id, class, rle), …]`` for :func:`write_submission`. Progress: case-days ``i/N`` with ETA
        (:mod:`vol25d.progress`).

    Raises:
        InputError: ``segment`` returned a mask of another shape (naming the case-day and both shapes).
    """
    rows: list[tuple[str, str, str]] = []
    for case_day_dir in track(_case_day_dirs(Path(src) / "test"), "test case-days", unit="case-day", logger=log):
        image, slices = read_gitract_test_case(case_day_dir)
        pred = np.asarray(segment(image))
        expected = (*image.shape, len(CLASSES))
        if pred.shape != expected:
            raise InputError(
                f"{case_day_dir.name}: segment returned a mask of shape {pred.shape}; expected {expected}, "
                "(X, Y, Z, classes) on the grid of the image it was given"
            )
        rows += submission_rows(case_day_dir.name, pred, [s.number for s in slices])
        log.info("%s: segmented %d test slices", case_day_dir.name, len(slices))
    return rows

"""Predictions → ``submission.csv`` rows (``id,class,predicted``), written atomically."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from vol25d.data.gitract.reading import CLASSES, _case_day_dirs, parse_slice_name, read_gitract_test_case
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


# What reading one case-day's PNGs raises when a file is truncated, garbage or misnamed: InputError from our own
# checks, OSError / SyntaxError / ValueError from PIL.
_UNREADABLE = (InputError, OSError, SyntaxError, ValueError)


def submission_rows_for_test_set(src: str | os.PathLike, segment) -> list[tuple[str, str, str]]:
    """Segment every test case-day of the competition folder and return its submission rows, one bad case-day
    never failing the rest.

    Each ``src/test/<case>/<case_day>`` is read with :func:`read_gitract_test_case`, passed to ``segment``,
    and its mask encoded with :func:`submission_rows`: one row per slice PNG under ``test/`` and class, the
    ids taken from the file names, in the order of :func:`list_test_slices`. A case-day that cannot be read (a
    truncated or garbage PNG, a misnamed file, mixed sizes) gets empty predictions for every slice PNG whose
    name parses, and one logged warning naming it and the error. Then every row of ``src/sample_submission.csv``
    (if present) that no slice gave is added with an empty prediction, so that no listed row is missing.

    Args:
        src: the competition folder. ``test/`` may be absent or empty (Kaggle's public run of a code
            competition notebook): then the rows are those of ``sample_submission.csv``, if any.
        segment: a function from a case-day image :class:`~vol25d.io.Volume` ``(X, Y, Z)`` to its bool/uint8
            mask ``(X, Y, Z, 3)`` on the same grid, channels :data:`CLASSES`; e.g.
            ``lambda image: predictor.labels(predictor.probabilities([image]))`` with a
            :class:`vol25d.infer.Predictor`.

    Returns:
        ``[(id, class, rle), …]`` for :func:`write_submission`. Progress: case-days ``i/N`` with ETA
        (:mod:`vol25d.progress`).

    Raises:
        InputError: ``segment`` returned a mask of another shape (naming the case-day and both shapes), or
            ``sample_submission.csv`` lacks the ``id`` or ``class`` column.
    """
    src = Path(src)
    rows: list[tuple[str, str, str]] = []
    for case_day_dir in track(_case_day_dirs(src / "test"), "test case-days", unit="case-day", logger=log):
        try:
            image, slices = read_gitract_test_case(case_day_dir)
        except _UNREADABLE as error:
            ids = _parsable_slice_ids(case_day_dir)
            log.warning("%s: cannot be read (%s); its %d slices get empty predictions", case_day_dir.name, error,
                        len(ids))
            rows += [(slice_id, name, "") for slice_id in ids for name in CLASSES]
            continue
        pred = np.asarray(segment(image))
        expected = (*image.shape, len(CLASSES))
        if pred.shape != expected:
            raise InputError(
                f"{case_day_dir.name}: segment returned a mask of shape {pred.shape}; expected {expected}, "
                "(X, Y, Z, classes) on the grid of the image it was given"
            )
        rows += submission_rows(case_day_dir.name, pred, [s.number for s in slices])
        log.info("%s: segmented %d test slices", case_day_dir.name, len(slices))
    missing = _missing_sample_rows(src / "sample_submission.csv", rows)
    if missing:
        log.warning("%d rows of %s have no readable slice name under test/ (e.g. %s %s): left empty", len(missing),
                    src / "sample_submission.csv", *missing[0])
        rows += [(slice_id, name, "") for slice_id, name in missing]
    return rows


def _parsable_slice_ids(case_day_dir: Path) -> list[str]:
    """The ids of a case-day's slice PNGs whose names parse, in slice-number order (repeats once)."""
    slices = []
    for path in (case_day_dir / "scans").glob("*.png"):
        try:
            slices.append(parse_slice_name(path, case_day_dir.name))
        except InputError:
            continue
    return list(dict.fromkeys(s.id for s in sorted(slices, key=lambda s: s.number)))


def _missing_sample_rows(sample: Path, rows: Sequence[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """``(id, class)`` pairs ``sample_submission.csv`` lists that ``rows`` lack, in the file's order."""
    if not sample.is_file():
        return []
    with sample.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "class"} <= set(reader.fieldnames or ()):
            raise InputError(f"{sample}: lacks the column(s) id and class; expected the competition's header "
                             "'id,class,predicted'")
        listed = [(row["id"], row["class"]) for row in reader]
    have = {(slice_id, name) for slice_id, name, _ in rows}
    return [pair for pair in dict.fromkeys(listed) if pair not in have]

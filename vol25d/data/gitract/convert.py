"""The competition's folder → an MSD-layout dataset (``vol25d convert-gitract``), and the index of slices
that maps a prediction back to submission rows."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from vol25d.data.gitract.reading import (
    CLASSES,
    MISLABELLED_CASE_DAYS,
    SliceFile,
    _case_day_dirs,
    list_case_slices,
    patient_of,
    read_gitract_case,
    read_gitract_test_case,
    read_train_csv,
)
from vol25d.files import atomic_path
from vol25d.io import write_volume
from vol25d.progress import track

log = logging.getLogger(__name__)


def _dataset_json(num_training: int, num_test: int, case_groups: dict[str, str]) -> dict:
    return {
        "name": "UW-Madison GI tract",
        "description": "Kaggle UW-Madison GI Tract Image Segmentation, one MRI volume per case-day",
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **{name: k + 1 for k, name in enumerate(CLASSES)}},
        "multi_label": True,
        "numTraining": num_training,
        "numTest": num_test,
        "file_ending": ".nii.gz",
        "case_groups": case_groups,
    }


def _write_json(data: dict, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def convert_gitract(src: str | os.PathLike, out: str | os.PathLike,
                    exclude: Iterable[str] = MISLABELLED_CASE_DAYS) -> Path:
    """Convert the competition folder to the MSD layout vol25d trains on.

    Writes ``out/imagesTr/<case_day>_0000.nii.gz`` (the PNG values in their integer type, uint16),
    ``out/labelsTr/<case_day>.nii.gz`` (uint8 ``(X, Y, Z, 3)`` multi-label), ``out/imagesTs/<case_day>_0000.nii.gz``
    for ``src/test/`` if present, ``out/dataset.json`` (``"multi_label": true``, and ``"case_groups"``: each
    case-day's patient, the ``<case>`` folder above it, so that :func:`~vol25d.data.dataset.split_cases` keeps a
    patient's days together) and ``out/slices.json`` (see :func:`load_slice_index`).

    One case-day is in memory at a time; progress shows case-days ``i/N`` with ETA (:mod:`vol25d.progress`). On Kaggle, write ``out`` outside ``/kaggle/working`` (e.g. under
    ``/tmp``): the converted copy is as large as the PNGs and does not belong in the notebook's output.

    Args:
        src: holds ``train.csv`` and ``train/`` (and optionally ``test/``).
        out: the dataset folder to create or update.
        exclude: training case-days to leave out (not converted, not in ``dataset.json`` or ``slices.json``);
            by default :data:`~vol25d.data.gitract.reading.MISLABELLED_CASE_DAYS`, whose masks are wrong.

    Returns:
        ``out`` as a Path.
    """
    src, out = Path(src), Path(out)
    if not (src / "train").is_dir():
        raise FileNotFoundError(f"{src / 'train'}: no such folder; pass the competition folder as src")
    rles = read_train_csv(src / "train.csv")
    index: dict[str, dict] = {}
    seen_ids: set[str] = set()
    excluded = set(exclude)
    every_day = _case_day_dirs(src / "train")
    train_days = [day for day in every_day if day.name not in excluded]
    skipped = sorted(excluded & {day.name for day in every_day})
    if skipped:
        log.info("left out of training: %s (known wrong masks)", ", ".join(skipped))
    for case_day_dir in track(train_days, "convert-gitract: training case-days", unit="case-day", logger=log):
        image, label = read_gitract_case(case_day_dir, rles)
        write_volume(image, out / "imagesTr" / f"{case_day_dir.name}_0000.nii.gz")
        write_volume(label, out / "labelsTr" / f"{case_day_dir.name}.nii.gz")
        slices = list_case_slices(case_day_dir)
        seen_ids.update(s.id for s in slices)
        index[case_day_dir.name] = _index_entry("train", case_day_dir, slices)
    unmatched = {i for i in set(rles) - seen_ids if i.rsplit("_slice_", 1)[0] not in excluded}
    if unmatched:
        log.warning(
            "train.csv: %d ids have no slice PNG under %s (e.g. %s)", len(unmatched), src / "train", min(unmatched)
        )
    test_days = _case_day_dirs(src / "test")
    for case_day_dir in track(test_days, "convert-gitract: test case-days", unit="case-day", logger=log):
        image, slices = read_gitract_test_case(case_day_dir)
        write_volume(image, out / "imagesTs" / f"{case_day_dir.name}_0000.nii.gz")
        index[case_day_dir.name] = _index_entry("test", case_day_dir, slices)
    out.mkdir(parents=True, exist_ok=True)
    groups = {day.name: patient_of(day) for day in train_days}
    _write_json(_dataset_json(len(train_days), len(test_days), groups), out / "dataset.json")
    _write_json(index, out / "slices.json")
    log.info("converted %d training and %d test case-days to %s", len(train_days), len(test_days), out)
    return out


def _index_entry(split: str, case_day_dir: Path, slices: Sequence[SliceFile]) -> dict:
    first = slices[0]
    return {
        "split": split,
        "patient": patient_of(case_day_dir),
        "height": first.height,
        "width": first.width,
        "pixel_spacing_mm": [first.pixel_width_mm, first.pixel_height_mm],
        "slice_numbers": [s.number for s in slices],
    }


def load_slice_index(dataset_dir: str | os.PathLike) -> dict[str, dict]:
    """Read ``slices.json`` written by :func:`convert_gitract`.

    Returns:
        ``{case_day: {"split": "train" | "test", "patient", "height", "width", "pixel_spacing_mm": [pw, ph],
        "slice_numbers": [...]}}``; ``slice_numbers[z]`` is the slice at volume index ``z``.
    """
    path = Path(dataset_dir) / "slices.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; convert the competition folder with convert_gitract first"
        )
    return json.loads(path.read_text())

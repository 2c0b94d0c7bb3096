"""Score a folder of predictions against a folder of reference labels: per case and class Dice, HD95 (mm),
clDice and volume difference; mean ± std per class; a printed table and a CSV."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from vol25d.data.dataset import group_channel_files, read_dataset_json
from vol25d.io import grid_mismatch
from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.io import read_volume
from vol25d.metrics import evaluate_case, summarise

log = logging.getLogger(__name__)

__all__ = ["evaluate_folders", "format_table"]

_COLUMNS = ("case", "class", "dice", "hd95_mm", "cldice", "volume_pred_ml", "volume_ref_ml", "volume_diff_ml",
            "relative_volume_difference")


def _class_names(ref_dir: Path, ref_example) -> list[str]:
    """Foreground class names from a ``dataset.json`` beside or above ``ref_dir``, else ``class_1 …``."""
    for folder in (ref_dir, ref_dir.parent):
        meta = folder / "dataset.json"
        if meta.is_file():
            labels = read_dataset_json(meta)["labels"]  # validated, MSD spellings normalised
            return [name for name, value in sorted(labels.items(), key=lambda item: item[1]) if value > 0]
    array = ref_example.array
    count = array.shape[3] if array.ndim == 4 else max(int(array.max()), 1)
    return [f"class_{k}" for k in range(1, count + 1)]


# What predict writes beside a case's labels (vol25d.infer's PROBABILITIES_SUFFIX and LABEL_MAP_SUFFIX):
# not predictions of cases of their own.
_BESIDE_LABELS = ("_probabilities", "_labelmap")


def _predictions(pred_dir: Path, references: dict) -> dict[str, list[Path]]:
    """Case → its prediction file, leaving out the probability and label-map files written beside labels
    (unless a reference has that very name)."""
    found = group_channel_files(pred_dir, split_channels=False)
    return {case: paths for case, paths in found.items()
            if case in references or not any(case.endswith(suffix) for suffix in _BESIDE_LABELS)}


def evaluate_folders(pred_dir: str | Path, ref_dir: str | Path, csv_path: str | Path | None = None, *,
                     allow_missing: bool = False):
    """Evaluate every prediction in ``pred_dir`` against the reference of the same case name in ``ref_dir``.

    Every reference needs a prediction (a half-finished folder would report a mean over the cases done), and
    every prediction must lie on its reference's grid (shape and affine, as ``check-data`` compares them).

    Args:
        pred_dir: predicted label files, named like the references (``<case>_probabilities…`` and
            ``<case>_labelmap…`` files that ``predict`` writes beside them are ignored).
        ref_dir: reference label files.
        csv_path: write the per-case table here (atomically).
        allow_missing: score only the references that have a prediction, instead of refusing.

    Returns:
        ``(rows, summary)``: one dict per case and class (see :func:`vol25d.metrics.evaluate_case`), and
        :func:`vol25d.metrics.summarise` of them.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    for folder, what in ((pred_dir, "--pred"), (ref_dir, "--ref")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist; pass a folder of label images")
    # Label files are whole cases: a name ending in _0001 is a case, not a channel.
    references = group_channel_files(ref_dir, split_channels=False)
    predictions = _predictions(pred_dir, references)
    missing = sorted(set(predictions) - set(references))
    if missing:
        raise InputError(f"{ref_dir} has no reference for {missing[:5]}; name each prediction like its reference label")
    unpredicted = sorted(set(references) - set(predictions))
    if unpredicted and not allow_missing:
        more = f" and {len(unpredicted) - 5} more" if len(unpredicted) > 5 else ""
        raise InputError(f"{pred_dir} has no prediction for {len(unpredicted)} of the {len(references)} reference(s) in "
                         f"{ref_dir} ({', '.join(unpredicted[:5])}{more}); predict them (predict --continue), or pass "
                         "--allow-missing to score only the cases predicted")
    if unpredicted:
        log.warning("scoring %d of %d references: no prediction for %s", len(predictions), len(references),
                    ", ".join(unpredicted[:5]) + (" …" if len(unpredicted) > 5 else ""))
    rows, names = [], None
    for case, (pred_path,) in ((c, p[:1]) for c, p in sorted(predictions.items())):
        ref_path = references[case][0]
        pred, ref = read_volume(pred_path), read_volume(ref_path)
        if pred.shape != ref.shape:
            raise InputError(f"{pred_path}: shape {pred.shape} differs from its reference {ref_path} {ref.shape}; predict on the reference's image")
        if pred.array.ndim != ref.array.ndim or pred.array.shape[3:] != ref.array.shape[3:]:
            raise InputError(f"{pred_path}: array shape {pred.array.shape} does not match its reference {ref_path} "
                             f"{ref.array.shape} (a 4-D file holds one channel per class); evaluate labels like the "
                             "references")
        mismatch = grid_mismatch(pred_path, pred.shape, pred.affine, ref_path, ref.shape, ref.affine,
                                 fix="predict on the reference's image (predict keeps its input's geometry)")
        if mismatch:
            raise InputError(mismatch[0])
        names = names or _class_names(ref_dir, ref)
        rows.extend(evaluate_case(pred.array, ref.array, ref.spacing, names, case_id=case))
    summary = summarise(rows)
    if csv_path is not None:
        _write_csv(rows, Path(csv_path))
    return rows, summary


def _write_csv(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, _COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _number(value: float) -> str:
    return "inf" if math.isinf(value) else "nan" if math.isnan(value) else f"{value:.3f}"


def format_table(rows: list[dict], summary: dict) -> str:
    """The per-case table, the mean ± std per class, and a last line ``mean Dice: 0.xxx``."""
    lines = [f"{'case':<24} {'class':<14} {'Dice':>7} {'HD95 mm':>8} {'clDice':>7} {'ΔV mL':>8}"]
    for row in rows:
        lines.append(
            f"{row['case']:<24} {row['class']:<14} {_number(row['dice']):>7} {_number(row['hd95_mm']):>8} "
            f"{_number(row.get('cldice', math.nan)):>7} {_number(row['volume_diff_ml']):>8}"
        )
    lines.append("")
    for name, metrics in summary.items():
        parts = [f"{key} {_number(m['mean'])} ± {_number(m['std'])}" for key, m in metrics.items()
                 if key in ("dice", "hd95_mm", "cldice", "volume_diff_ml")]
        lines.append(f"{name}: " + ", ".join(parts))
    mean_dice = sum(r["dice"] for r in rows) / len(rows)
    lines.append(f"mean Dice: {mean_dice:.3f}")
    return "\n".join(lines)

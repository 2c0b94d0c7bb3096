"""Score a folder of predictions against a folder of reference labels: per case and class Dice, HD95 (mm),
clDice and volume difference; mean ± sample sd (ddof 1) per class; a printed table, a CSV and a JSON summary."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

from vol25d.data.dataset import group_channel_files, read_dataset_json
from vol25d.io import grid_mismatch
from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.io import read_volume
from vol25d.metrics import evaluate_case, summarise
from vol25d.progress import track

log = logging.getLogger(__name__)

__all__ = ["evaluate_folders", "format_table", "summary_json"]

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
                     allow_missing: bool = False, json_path: str | Path | None = None):
    """Evaluate every prediction in ``pred_dir`` against the reference of the same case name in ``ref_dir``.

    Every reference needs a prediction (a half-finished folder would report a mean over the cases done), and
    every prediction must lie on its reference's grid (shape and affine, as ``check-data`` compares them).

    Args:
        pred_dir: predicted label files, named like the references (``<case>_probabilities…`` and
            ``<case>_labelmap…`` files that ``predict`` writes beside them are ignored).
        ref_dir: reference label files.
        csv_path: write the per-case table here (atomically).
        allow_missing: score only the references that have a prediction, instead of refusing.
        json_path: write the summary for scripts here (atomically; see :func:`summary_json`).

    Progress: cases ``i/N`` with ETA (:mod:`vol25d.progress`).

    Returns:
        ``(rows, summary)``: one dict per case and class (see :func:`vol25d.metrics.evaluate_case`), and
        :func:`vol25d.metrics.summarise` of them with the sample sd (``ddof=1``, as :func:`summary_json`).

    Raises:
        InputError: a prediction without a reference, a reference without a prediction (unless
            ``allow_missing``), no prediction at all, or a prediction off its reference's grid.
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
    if not predictions:  # only files predict writes beside labels: nothing to score, whatever allow_missing says
        raise InputError(f"{pred_dir} holds no prediction for any of the {len(references)} reference(s) in {ref_dir} "
                         f"(files ending in {' or '.join(_BESIDE_LABELS)} are written beside predictions, not "
                         f"scored); predict the images into {pred_dir} (vol25d predict -i IMAGES -o {pred_dir}) or "
                         "pass --pred the folder of predicted label files")
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
    scored = ((c, p[:1]) for c, p in sorted(predictions.items()))
    for case, (pred_path,) in track(scored, "evaluate", total=len(predictions), logger=log):
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
    summary = summarise(rows, ddof=1)
    if csv_path is not None:
        _write_csv(rows, Path(csv_path))
    if json_path is not None:
        _write_json(summary_json(rows, pred_dir, ref_dir), Path(json_path))
    return rows, summary


def _finite(value: float) -> float | None:
    """JSON has no inf or NaN: ``None`` for them."""
    return float(value) if math.isfinite(value) else None


def summary_json(rows: list[dict], pred_dir: str | Path, ref_dir: str | Path) -> dict:
    """The evaluation as plain JSON values: each case's metrics per class, and per class the mean, sample
    standard deviation (ddof 1), number of finite values and number left out of every metric.

    Returns:
        ``{"pred", "ref", "metrics", "sd_ddof": 1, "non_finite", "mean_dice", "cases": {case: {class:
        {metric: value}}}, "classes": {class: {metric: {"mean", "sd", "n", "n_excluded"}}}}``; a value that is
        not finite (an ``inf`` HD95 where one mask is empty, a mean or sd without enough finite values) is
        ``null``, and the mean and sd leave such values out (counted in ``n_excluded``).
    """
    metrics = [key for key in _COLUMNS[2:] if any(key in row for row in rows)]
    cases: dict[str, dict] = {}
    for row in rows:
        cases.setdefault(str(row["case"]), {})[str(row["class"])] = {key: _finite(row[key]) for key in metrics
                                                                     if key in row}
    classes = {name: {key: {"mean": _finite(m["mean"]), "sd": _finite(m["std"]), "n": m["n"],
                            "n_excluded": m["n_excluded"]} for key, m in per_class.items() if key in metrics}
               for name, per_class in summarise(rows, ddof=1).items()}
    return {
        "pred": str(pred_dir), "ref": str(ref_dir), "metrics": metrics, "sd_ddof": 1,
        "non_finite": "null; left out of mean and sd and counted in n_excluded",
        "mean_dice": _finite(sum(r["dice"] for r in rows) / len(rows)) if rows else None,
        "cases": cases, "classes": classes,
    }


def _write_json(summary: dict, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _write_csv(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, _COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _number(value: float, missing: str = "nan") -> str:
    """``value`` to 3 decimals, ``inf``, or ``missing`` for NaN."""
    return "inf" if math.isinf(value) else missing if math.isnan(value) else f"{value:.3f}"


def format_table(rows: list[dict], summary: dict) -> str:
    """The per-case table, a legend line, the mean ± sd per class, and a last line ``mean Dice: 0.xxx``.

    Args:
        rows: :func:`evaluate_folders`' rows.
        summary: :func:`evaluate_folders`' summary, ``summarise(rows, ddof=1)``: the sd is the sample sd, as
            in :func:`summary_json`; ``n/a`` where there are fewer than two finite values (a mean without any).
    """
    lines = [f"{'case':<24} {'class':<14} {'Dice':>7} {'HD95 mm':>8} {'clDice':>7} {'ΔV mL':>8}"]
    for row in rows:
        lines.append(
            f"{row['case']:<24} {row['class']:<14} {_number(row['dice']):>7} {_number(row['hd95_mm']):>8} "
            f"{_number(row.get('cldice', math.nan)):>7} {_number(row['volume_diff_ml']):>8}"
        )
    lines.append("")
    lines.append("per class, mean ± sd over cases (sample sd, ddof 1, as in --json; inf and nan left out; n/a: "
                 "too few finite values)")
    for name, metrics in summary.items():
        parts = [f"{key} {_number(m['mean'], 'n/a')} ± {_number(m['std'], 'n/a')}" for key, m in metrics.items()
                 if key in ("dice", "hd95_mm", "cldice", "volume_diff_ml")]
        lines.append(f"{name}: " + ", ".join(parts))
    mean_dice = f"{sum(r['dice'] for r in rows) / len(rows):.3f}" if rows else "n/a"
    lines.append(f"mean Dice: {mean_dice}")
    return "\n".join(lines)

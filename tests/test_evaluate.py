"""vol25d.evaluate: its JSON summary (per case and class every metric, per class mean ± sample sd, JSON-valid),
its printed table (the same sample sd) and a prediction folder with nothing to score."""

import json
import math
import re

import nibabel as nib
import numpy as np
import pytest

from vol25d.cli import main
from vol25d.evaluate import format_table, summary_json
from vol25d.metrics import summarise

ROWS = [
    {"case": "a", "class": "liver", "dice": 0.8, "hd95_mm": 2.0, "cldice": 0.7, "volume_diff_ml": 1.0},
    {"case": "a", "class": "tumour", "dice": 0.0, "hd95_mm": math.inf, "cldice": 0.0, "volume_diff_ml": -2.0},
    {"case": "b", "class": "liver", "dice": 0.6, "hd95_mm": 4.0, "cldice": 0.5, "volume_diff_ml": 3.0},
    {"case": "b", "class": "tumour", "dice": 1.0, "hd95_mm": 0.0, "cldice": 1.0, "volume_diff_ml": 0.0},
]


def test_the_summary_holds_every_case_and_class_and_mean_and_sample_sd():
    summary = summary_json(ROWS, "pred", "ref")
    assert summary["sd_ddof"] == 1 and summary["metrics"] == ["dice", "hd95_mm", "cldice", "volume_diff_ml"]
    assert summary["cases"]["a"] == {"liver": {"dice": 0.8, "hd95_mm": 2.0, "cldice": 0.7, "volume_diff_ml": 1.0},
                                     "tumour": {"dice": 0.0, "hd95_mm": None, "cldice": 0.0, "volume_diff_ml": -2.0}}
    liver = summary["classes"]["liver"]
    assert liver["dice"] == {"mean": pytest.approx(0.7), "sd": pytest.approx(math.sqrt(0.02)), "n": 2, "n_excluded": 0}
    # The inf HD95 is left out and counted; one finite value has a mean but no sample sd.
    assert summary["classes"]["tumour"]["hd95_mm"] == {"mean": 0.0, "sd": None, "n": 1, "n_excluded": 1}
    assert summary["mean_dice"] == pytest.approx(0.6)
    json.dumps(summary, allow_nan=False)  # strict JSON: no Infinity or NaN


def _label(path, extent: int) -> None:
    """A 6³ label file: class 1 in the cube ``[1, 1 + extent)³``."""
    array = np.zeros((6, 6, 6), np.uint8)
    array[1:1 + extent, 1:1 + extent, 1:1 + extent] = 1
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


def _folders(tmp_path, predicted: dict[str, int]):
    """Three reference cases (a 3³ cube each) and predictions of the given cube sizes."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir(), pred.mkdir()
    for case in ("a", "b", "c"):
        _label(ref / f"{case}.nii.gz", 3)
    for case, extent in predicted.items():
        _label(pred / f"{case}.nii.gz", extent)
    return pred, ref


def test_the_printed_table_has_the_sample_sd_of_the_json(tmp_path, capsys):
    pred, ref = _folders(tmp_path, {"a": 3, "b": 2, "c": 4})
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--json", str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "sample sd, ddof 1" in table
    dice = json.loads((tmp_path / "s.json").read_text())["classes"]["class_1"]["dice"]
    mean, sd = re.search(r"^class_1: dice (\S+) ± (\S+),", table, re.MULTILINE).groups()
    assert float(mean) == pytest.approx(dice["mean"], abs=5e-4) and float(sd) == pytest.approx(dice["sd"], abs=5e-4)
    assert dice["sd"] > 0.01  # ddof 0 would print a visibly smaller sd


def test_a_metric_with_one_finite_value_shows_its_sd_as_n_a():
    table = format_table(ROWS, summarise(ROWS, ddof=1))
    assert "tumour: dice 0.500 ± 0.707, hd95_mm 0.000 ± n/a," in table
    assert "± nan" not in table


def test_allow_missing_without_any_prediction_is_one_sentence(tmp_path, capsys):
    pred, ref = _folders(tmp_path, {})
    _label(pred / "a_probabilities.nii.gz", 3)  # written beside a prediction by predict; not one itself
    before = sorted(tmp_path.rglob("*"))
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--allow-missing",
                 "--csv", str(tmp_path / "s.csv"), "--json", str(tmp_path / "s.json")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert str(pred) in lines[0] and str(ref) in lines[0] and "vol25d predict" in lines[0]
    assert sorted(tmp_path.rglob("*")) == before

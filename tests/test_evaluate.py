"""vol25d.evaluate's JSON summary: per case and class every metric, per class mean ± sample sd, JSON-valid."""

import json
import math

import pytest

from vol25d.evaluate import summary_json

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

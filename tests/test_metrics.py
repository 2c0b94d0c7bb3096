"""Hand-computable cases for vol25d.metrics: every expected number is derived in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vol25d.errors import InputError
from vol25d.metrics import (
    cldice,
    dice,
    evaluate_case,
    hd95,
    summarise,
    volume_difference,
)


def _cube(shape, lo, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(a, a + size) for a in lo)] = True
    return mask


# --- Dice -------------------------------------------------------------------------------------------


def test_dice_of_two_overlapping_cubes():
    # Two 4³ cubes shifted by 2 along X overlap in 2·4·4 = 32 voxels: Dice = 2·32 / (64 + 64) = 0.5.
    a = _cube((10, 10, 10), (1, 1, 1), 4)
    b = _cube((10, 10, 10), (3, 1, 1), 4)
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_dice_empty_cases():
    empty = np.zeros((5, 5, 5), bool)
    full = _cube((5, 5, 5), (0, 0, 0), 2)
    assert dice(empty, empty) == 1.0
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0


def test_dice_rejects_shape_mismatch():
    with pytest.raises(InputError, match=r"same shape.*\(3, 3\).*\(3, 4\)"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


# --- HD95 -------------------------------------------------------------------------------------------


def test_hd95_two_points_anisotropic_spacing():
    # One voxel each, offset (3, 4, 0) voxels; with spacing (0.5, 2, 3) mm: sqrt(1.5² + 8²) mm.
    a = np.zeros((10, 12, 8), bool)
    b = a.copy()
    a[2, 3, 1] = True
    b[5, 7, 1] = True
    expected = math.hypot(3 * 0.5, 4 * 2.0)
    assert hd95(a, b, (0.5, 2.0, 3.0)) == pytest.approx(expected, rel=1e-6)
    # The slice axis counts with its own spacing: offset 2 slices at 3 mm = 6 mm.
    c = np.zeros_like(a)
    c[2, 3, 3] = True
    assert hd95(a, c, (0.5, 2.0, 3.0)) == pytest.approx(6.0, rel=1e-6)


def test_hd95_empty_cases():
    empty = np.zeros((6, 6, 6), bool)
    point = empty.copy()
    point[1, 1, 1] = True
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    assert hd95(point, empty, (1, 1, 1)) == math.inf
    assert hd95(empty, point, (1, 1, 1)) == math.inf


def test_hd95_rejects_bad_spacing():
    with pytest.raises(InputError, match="spacing_mm must be 3 positive numbers"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 0.0, 1.0))


# --- clDice -----------------------------------------------------------------------------------------


def test_cldice_line_vs_shifted_line():
    shape = (20, 9, 9)
    # A 1-voxel line is its own skeleton: a line shifted by one voxel meets the other nowhere.
    line = np.zeros(shape, bool)
    line[2:18, 4, 4] = True
    shifted = np.roll(line, 1, axis=1)
    assert cldice(line, shifted) == 0.0
    # Half the line: its skeleton lies inside the full line (tprec 1) and covers half of it (tsens 8/16),
    # clDice = 2·1·0.5 / 1.5 = 2/3.
    half = np.zeros(shape, bool)
    half[2:10, 4, 4] = True
    assert cldice(half, line) == pytest.approx(2 / 3)
    assert cldice(line, line) == 1.0


def test_cldice_forgives_a_shift_inside_a_thick_tube():
    # 3×3 tubes shifted by one voxel: each centreline lies inside the other tube, so clDice is 1 while
    # Dice is 2·(2·3·16) / (2·3·3·16) = 2/3.
    tube = np.zeros((20, 9, 9), bool)
    tube[2:18, 3:6, 3:6] = True
    shifted = np.roll(tube, 1, axis=1)
    assert dice(tube, shifted) == pytest.approx(2 / 3)
    assert cldice(tube, shifted) == pytest.approx(1.0)


def test_cldice_survives_skeletonize_erasing_a_thin_tube():
    # scikit-image's 3-D thinning returns nothing for a 2×2 tube; its stand-in is the distance-transform
    # ridge, here the whole tube (every voxel is 1 voxel from the background). A 1-voxel line inside it:
    # tprec = 1 (line ⊂ tube), tsens = 34 / (4·34) = 0.25, clDice = 2·0.25 / 1.25 = 0.4.
    tube = np.zeros((40, 8, 8), bool)
    tube[3:37, 3:5, 3:5] = True
    line = np.zeros_like(tube)
    line[3:37, 3, 3] = True
    assert cldice(tube, tube) == 1.0
    assert cldice(line, tube) == pytest.approx(0.4)


def test_cldice_empty_cases():
    empty = np.zeros((5, 5, 5), bool)
    line = empty.copy()
    line[:, 2, 2] = True
    assert cldice(empty, empty) == 1.0
    assert cldice(line, empty) == 0.0
    assert cldice(empty, line) == 0.0


# --- volume difference, evaluate_case, summarise ----------------------------------------------------


def test_volume_difference_in_ml_and_relative():
    # 1 voxel = 2·2·2.5 mm³ = 10 mm³ = 0.01 mL; pred 30 voxels, ref 20 voxels.
    pred = np.zeros((10, 10, 10), bool)
    ref = pred.copy()
    pred.flat[:30] = True
    ref.flat[:20] = True
    out = volume_difference(pred, ref, (2.0, 2.0, 2.5))
    assert out["volume_pred_ml"] == pytest.approx(0.30)
    assert out["volume_ref_ml"] == pytest.approx(0.20)
    assert out["volume_diff_ml"] == pytest.approx(0.10)
    assert out["relative_volume_difference"] == pytest.approx(0.5)
    empty = np.zeros_like(pred)
    assert volume_difference(empty, empty, (1, 1, 1))["relative_volume_difference"] == 0.0
    assert volume_difference(pred, empty, (1, 1, 1))["relative_volume_difference"] == math.inf
    assert volume_difference(empty, ref, (1, 1, 1))["relative_volume_difference"] == -1.0


def test_evaluate_case_label_map_and_multilabel_agree():
    shape = (10, 10, 10)
    ref_map = np.zeros(shape, np.uint8)
    ref_map[_cube(shape, (1, 1, 1), 4)] = 1
    ref_map[_cube(shape, (6, 6, 6), 3)] = 2
    pred_map = np.zeros(shape, np.uint8)
    pred_map[_cube(shape, (3, 1, 1), 4)] = 1  # class 1: Dice 0.5; class 2 missed entirely
    rows = evaluate_case(pred_map, ref_map, (1.0, 1.0, 2.0), ["a", "b"], case_id="c1")
    assert [r["class"] for r in rows] == ["a", "b"]
    assert rows[0]["case"] == "c1"
    assert rows[0]["dice"] == pytest.approx(0.5)
    assert rows[0]["hd95_mm"] == pytest.approx(2.0)  # surfaces 2 voxels apart along X (1 mm spacing)
    assert rows[1]["dice"] == 0.0 and rows[1]["hd95_mm"] == math.inf and rows[1]["cldice"] == 0.0
    multilabel = np.stack([pred_map == 1, pred_map == 2], axis=-1).astype(np.uint8)
    rows_ml = evaluate_case(multilabel, ref_map, (1.0, 1.0, 2.0), ["a", "b"], case_id="c1")
    assert rows_ml == rows
    with pytest.raises(InputError, match="3 channels but 2 class names"):
        evaluate_case(np.zeros(shape + (3,)), ref_map, (1, 1, 1), ["a", "b"])


def test_summarise_is_nan_safe():
    rows = [
        {"case": "1", "class": "a", "dice": 0.5, "hd95_mm": 2.0},
        {"case": "2", "class": "a", "dice": 1.0, "hd95_mm": 4.0},
        {"case": "3", "class": "a", "dice": 0.0, "hd95_mm": math.inf},
    ]
    summary = summarise(rows)
    assert summary["a"]["dice"] == {"mean": 0.5, "std": pytest.approx(math.sqrt(1 / 6)), "n": 3, "n_excluded": 0}
    assert summary["a"]["hd95_mm"] == {"mean": 3.0, "std": 1.0, "n": 2, "n_excluded": 1}
    sample = summarise(rows, ddof=1)
    assert sample["a"]["dice"]["std"] == pytest.approx(0.5) and sample["a"]["hd95_mm"]["std"] == pytest.approx(math.sqrt(2))
    assert math.isnan(summarise(rows[:1], ddof=1)["a"]["dice"]["std"])  # one value has no sample std

"""Hand-computable cases for vol25d.data.gitract.score, the competition's score: every expected number is
derived in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vol25d.data.gitract.score import gi_tract_hausdorff, gi_tract_score, gi_tract_score_cases, gi_tract_slice_dice
from vol25d.errors import InputError



def _gi_empty(shape=(4, 5, 3), k=3):
    return np.zeros(shape + (k,), bool)


def test_gi_score_perfect_and_empty():
    ref = _gi_empty()
    assert gi_tract_score(ref, ref) == 1.0  # everything empty: Dice 1 per image, distance 0
    ref[1:3, 1:4, 0:2, 0] = True
    ref[0, 0, 2, 2] = True
    assert gi_tract_score(ref.copy(), ref) == 1.0


def test_gi_score_one_empty_class_scores_zero_hausdorff():
    ref = _gi_empty()
    ref[1:3, 1:3, 1, 0] = True
    pred = _gi_empty()
    np.testing.assert_array_equal(gi_tract_hausdorff(pred, ref), [1.0, 0.0, 0.0])
    # Slice Dice: class 0 is 0 on slice 1 and 1 on the two empty slices; classes 1, 2 are 1 everywhere.
    np.testing.assert_array_equal(gi_tract_slice_dice(pred, ref), [[1, 1, 1], [0, 1, 1], [1, 1, 1]])
    assert gi_tract_score(pred, ref) == pytest.approx(0.4 * 8 / 9 + 0.6 * (1 - 1 / 3))


def test_gi_score_one_slice_shift():
    # One class, shape (X, Y, Z) = (4, 5, 3). Truth: a 2×2 square on slice 0; prediction: the same square
    # on slice 1. Slice Dice: slice 0 → 0 (truth only), slice 1 → 0 (prediction only), slice 2 → 1
    # (both empty): mean 1/3. Every voxel moves by exactly 1 slice: Hausdorff 1 voxel, diagonal
    # sqrt(4² + 5² + 3²) = sqrt(50). Score = 0.4/3 + 0.6 · (1 − 1/sqrt(50)).
    ref = _gi_empty(k=1)
    ref[1:3, 2:4, 0, 0] = True
    pred = np.roll(ref, 1, axis=2)
    expected = 0.4 / 3 + 0.6 * (1 - 1 / math.sqrt(50))
    assert gi_tract_score(pred, ref) == pytest.approx(expected)
    # With two more classes, both empty: Dice (1/3 + 1 + 1) / 3, distances (1/sqrt(50), 0, 0).
    pred3, ref3 = _gi_empty(), _gi_empty()
    pred3[..., 0], ref3[..., 0] = pred[..., 0], ref[..., 0]
    expected3 = 0.4 * (7 / 9) + 0.6 * (1 - (1 / math.sqrt(50)) / 3)
    assert gi_tract_score(pred3, ref3) == pytest.approx(expected3)


def test_gi_hausdorff_symmetric_vs_directed():
    # Prediction one voxel, truth that voxel plus one 3 slices away: pred → truth is 0, truth → pred is 3.
    ref = _gi_empty(shape=(4, 4, 6), k=1)
    ref[1, 1, 0, 0] = ref[1, 1, 3, 0] = True
    pred = _gi_empty(shape=(4, 4, 6), k=1)
    pred[1, 1, 0, 0] = True
    diagonal = math.sqrt(16 + 16 + 36)
    assert gi_tract_hausdorff(pred, ref)[0] == pytest.approx(3 / diagonal)
    assert gi_tract_hausdorff(pred, ref, directed=True)[0] == 0.0


def test_gi_score_cases_pools_images_and_volumes():
    # Case A perfect with one class (3 images, distance 0); case B is the one-slice shift above.
    ref_a = _gi_empty(k=1)
    ref_a[0, 0, 0, 0] = True
    ref_b = _gi_empty(k=1)
    ref_b[1:3, 2:4, 0, 0] = True
    out = gi_tract_score_cases([(ref_a, ref_a), (np.roll(ref_b, 1, axis=2), ref_b)])
    assert out["dice"] == pytest.approx((3 + 1) / 6)  # mean over all 6 images, not a mean of case means
    assert out["hausdorff"] == pytest.approx((0 + 1 / math.sqrt(50)) / 2)
    assert out["score"] == pytest.approx(0.4 * out["dice"] + 0.6 * (1 - out["hausdorff"]))
    with pytest.raises(InputError, match=r"4-D multi-label"):
        gi_tract_score(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)))

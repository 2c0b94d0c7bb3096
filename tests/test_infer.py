"""Labels from probabilities and small-component removal (the CLI tests cover files in and out)."""

import subprocess
import sys

import numpy as np

from vol25d.infer import probabilities_to_labels, remove_small_components


def test_small_components_are_dropped_and_large_ones_kept():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[7, 7, 7] = True  # 1 voxel
    mask[8, 8, 8] = True  # touches the one above diagonally: 26-connected, 2 voxels
    kept = remove_small_components(mask, 3)
    assert kept[1:4, 1:4, 1:4].all()
    assert not kept[7, 7, 7] and not kept[8, 8, 8]
    assert remove_small_components(mask, 2)[8, 8, 8]


def test_exclusive_classes_become_one_integer_map():
    probabilities = np.zeros((2, 1, 1, 3), dtype=np.float32)
    probabilities[0, 0, 0] = [0.2, 0.7, 0.6]
    probabilities[1, 0, 0] = [0.1, 0.3, 0.2]
    labels = probabilities_to_labels(probabilities, 0.5, multi_label=False)
    assert labels.shape == (2, 1, 1) and labels.dtype == np.uint8
    assert labels[0, 0, 0] == 2 and labels[1, 0, 0] == 0


def test_overlapping_classes_stay_one_channel_each():
    probabilities = np.zeros((1, 1, 1, 3), dtype=np.float32)
    probabilities[0, 0, 0] = [0.9, 0.6, 0.1]
    labels = probabilities_to_labels(probabilities, 0.5, multi_label=True)
    assert labels.shape == (1, 1, 1, 3)
    assert labels[0, 0, 0].tolist() == [1, 1, 0]


def test_prediction_does_not_import_the_training_stack():
    code = "import sys, vol25d.infer; print(sorted(m for m in ('vol25d.train', 'kornia') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

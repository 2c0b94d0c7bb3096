"""vol25d/data/gi_phantom.py: three overlapping organ classes, the competition's geometry, a multi-label
dataset the reader accepts."""

import numpy as np
import pytest

from vol25d.data.dataset import load_dataset
from vol25d.data.gi_phantom import GI_CLASSES, make_gi_phantom, write_gi_phantom_dataset


def test_three_classes_inside_a_brighter_fat_ring_and_reproducible():
    image, label, affine = make_gi_phantom((64, 64, 20), seed=4)
    assert image.shape == (64, 64, 20) and label.shape == (64, 64, 20, 3) and label.dtype == np.uint8
    fractions = label.reshape(-1, 3).mean(0)
    assert np.all(fractions > 0.002), fractions
    # The fat ring is brighter than every organ: an organ is not its rays' maximum, unlike a TOF vessel.
    assert np.percentile(image, 99.5) > max(np.median(image[label[..., c] > 0]) for c in range(3))
    assert affine[2, 2] == pytest.approx(3.0)  # 3 mm slices
    again = make_gi_phantom((64, 64, 20), seed=4)
    assert np.array_equal(again[0], image) and np.array_equal(again[1], label)


def test_the_tubes_overlap_somewhere_and_the_dataset_is_multi_label(tmp_path):
    overlaps = [int((make_gi_phantom((64, 64, 20), seed=s)[1].sum(-1) > 1).sum()) for s in range(3)]
    assert max(overlaps) > 0, overlaps
    root = write_gi_phantom_dataset(tmp_path / "gi", 2, (48, 48, 16), seed=1)
    dataset = load_dataset(root)
    assert dataset.multi_label is True
    assert list(dataset.class_names) == list(GI_CLASSES)
    assert len(dataset.cases) == 2

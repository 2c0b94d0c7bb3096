"""experiments/tube_phantoms.py: the sparse-tube MRA-like phantom generator and its MSD writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import load_script
from vol25d.data.check import check_dataset
from vol25d.data.dataset import load_dataset
from vol25d.io import read_volume

tp = load_script(Path(__file__).resolve().parents[1] / "experiments" / "tube_phantoms.py", "tube_phantoms")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_types_shapes_and_determinism():
    image, label, affine = tp.make_tube_phantom(32, seed=3)
    assert image.shape == label.shape == (32, 32, 32)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and affine.shape == (4, 4)
    assert set(np.unique(label).tolist()) == {0, 1} and np.all(affine[3] == [0, 0, 0, 1])
    again = tp.make_tube_phantom(32, seed=3)
    assert again[0].tobytes() == image.tobytes() and again[1].tobytes() == label.tobytes()
    assert tp.make_tube_phantom(32, seed=4)[1].tobytes() != label.tobytes()
    assert tp.make_tube_phantom((24, 20, 16), seed=1)[0].shape == (24, 20, 16)
    with pytest.raises(ValueError, match="at least 16"):
        tp.make_tube_phantom(8, seed=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_thick_tubes_whose_label_the_intensity_tells(seed):
    image, label, _ = tp.make_tube_phantom(48, seed)
    assert 0.003 <= label.mean() <= 0.04
    # No sub-voxel twigs: a good share of the label is interior (all 6 neighbours label too), which a tree of
    # one-voxel-thin branches would not have.
    interior = label.astype(bool)
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(label, shift, axis=axis).astype(bool)
    assert interior.sum() >= 0.12 * label.sum()
    # Unlike other_phantoms.py's, the voxel's own intensity nearly tells the label (one threshold per case).
    best = max(dice(image >= t, label > 0) for t in np.quantile(image, np.linspace(0.9, 0.999, 60)))
    assert best >= 0.8


def test_written_dataset_loads_and_checks(tmp_path):
    root = tp.write_tube_dataset(tmp_path / "tube", n=2, size=24, seed=5)
    info = load_dataset(root)
    assert [c.name for c in info.cases] == ["tube_000", "tube_001"] and info.class_names == ["vessel"]
    assert check_dataset(root) == []
    expected_image, expected_label, affine = tp.make_tube_phantom(24, tp.tube_seed(5, 0))
    image = read_volume(info.cases[0].image_paths[0])
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(image.array), expected_image, rtol=1e-6)
    assert np.array_equal(np.asarray(read_volume(info.cases[0].label_path).array), expected_label)

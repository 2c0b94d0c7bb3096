"""experiments/other_phantoms.py: the independent MRA-like phantom generator and its MSD writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_script
from vol25d.data.check import check_dataset
from vol25d.data.dataset import load_dataset
from vol25d.io import read_volume

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "other_phantoms.py"
SIZE = 32


op = load_script(SCRIPT, "other_phantoms")


@pytest.fixture(scope="module")
def case():
    return op.make_other_phantom(SIZE, seed=3)


def test_types_shapes_and_values(case):
    image, label, affine = case
    assert image.shape == label.shape == (SIZE, SIZE, SIZE)
    assert image.dtype == np.int16 and label.dtype == np.uint8 and affine.dtype == np.float64
    assert affine.shape == (4, 4) and abs(np.linalg.det(affine[:3, :3])) > 1e-6
    assert set(np.unique(label).tolist()) == {0, 1}
    assert image.min() >= 0 and 800 < image.max() < 2000  # scanner-like units, vessels ≈ 900–1400
    assert np.all(affine[3] == [0, 0, 0, 1])
    image2, label2, _ = op.make_other_phantom((24, 20, 16), seed=1)
    assert image2.shape == label2.shape == (24, 20, 16)


def test_same_seed_same_arrays_other_seed_differs(case):
    image, label, affine = op.make_other_phantom(SIZE, seed=3)
    assert image.tobytes() == case[0].tobytes() and label.tobytes() == case[1].tobytes()
    assert np.array_equal(affine, case[2])
    other = op.make_other_phantom(SIZE, seed=4)
    assert other[1].tobytes() != case[1].tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_fraction_contrast_and_spread(seed):
    n = 48
    image, label, _ = op.make_other_phantom(n, seed)
    image = image.astype(np.float64)
    assert 0.004 <= label.mean() <= 0.025
    body = (image > 150) & (label == 0)
    assert image[label > 0].mean() > 1.5 * image[body].mean()  # vessels are bright (sub-voxel twigs are dimmer)
    # The brightest 1 % of a MIP along Z comes from vessels, not from the fat layer or the noise.
    arg = image.argmax(axis=2)
    on_vessel = np.take_along_axis(label, arg[..., None], axis=2)[..., 0]
    mip = image.max(axis=2)
    assert on_vessel[mip >= np.percentile(mip, 99)].mean() >= 0.9
    # Trunks enter through the bottom (Z = 0) face; the tree reaches far up and out, not just the middle.
    idx = np.argwhere(label)
    assert idx[:, 2].min() == 0 and idx[:, 2].max() >= 0.75 * n
    assert np.ptp(idx[:, 0]) >= 0.55 * n and np.ptp(idx[:, 1]) >= 0.55 * n
    assert label[:, :, n // 2:].sum() >= 0.35 * label.sum()  # not just trunks in the neck


def test_written_dataset_loads_and_checks(tmp_path):
    root = op.write_other_dataset(tmp_path / "other", n=2, size=24, seed=5)
    info = load_dataset(root)
    assert [c.name for c in info.cases] == ["other_000", "other_001"]
    assert info.class_names == ["vessel"] and info.num_training == 2
    assert check_dataset(root) == []
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRA"} and meta["labels"] == {"background": 0, "vessel": 1}
    image = read_volume(info.cases[0].image_paths[0])
    expected_image, expected_label, affine = op.make_other_phantom(24, op.other_seed(5, 0))
    np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    assert np.array_equal(np.asarray(image.array), expected_image)
    assert np.array_equal(np.asarray(read_volume(info.cases[0].label_path).array), expected_label)
    # A smaller rewrite drops the cases it no longer has.
    op.write_other_dataset(root, n=1, size=24, seed=5)
    assert [c.name for c in load_dataset(root).cases] == ["other_000"] and check_dataset(root) == []


def test_command_line(tmp_path, capsys):
    assert op.main([str(tmp_path / "cli"), "--n", "1", "--size", "20", "--seed", "0"]) == 0
    assert "wrote 1 cases" in capsys.readouterr().out
    assert check_dataset(tmp_path / "cli") == []

"""Tests for vol25d.data.phantom: determinism, plausible vessels, shell, geometry, and the written dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from vol25d.data.check import check_dataset
from vol25d.data.dataset import load_dataset
from vol25d.data.phantom import make_phantom, phantom_seed, write_phantom_dataset
from vol25d.io import read_volume

SIZE = 32


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SIZE, seed=7)


def test_shapes_and_types(phantom):
    image, label, affine = phantom
    assert image.shape == label.shape == (SIZE, SIZE, SIZE)
    assert image.dtype == np.float32 and label.dtype == np.uint8 and affine.dtype == np.float64
    assert affine.shape == (4, 4)
    assert set(np.unique(label).tolist()) == {0, 1}
    assert np.all(np.isfinite(image)) and image.min() >= 0.0  # Rician magnitudes are non-negative


def test_tuple_size_is_x_y_z():
    image, label, _ = make_phantom((24, 20, 16), seed=1)
    assert image.shape == label.shape == (24, 20, 16)


def test_same_seed_gives_identical_arrays_and_other_seeds_differ(phantom):
    image, label, affine = make_phantom(SIZE, seed=7)
    assert image.tobytes() == phantom[0].tobytes()
    assert label.tobytes() == phantom[1].tobytes()
    assert affine.tobytes() == phantom[2].tobytes()
    other = make_phantom(SIZE, seed=8)
    assert other[0].tobytes() != image.tobytes()
    assert other[1].tobytes() != label.tobytes()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_vessel_fraction_is_plausible(seed):
    _, label, _ = make_phantom(SIZE, seed=seed)
    assert 0.005 <= label.mean() <= 0.08


def _depth_mm(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel from the outside of the head (0 outside)."""
    head = ndimage.binary_fill_holes(ndimage.gaussian_filter(image, 1.0) > 0.2)
    return ndimage.distance_transform_edt(head, sampling=np.linalg.norm(affine[:3, :3], axis=0))


def test_vessels_span_several_radii_and_are_bright(phantom):
    image, label, affine = phantom
    vessel = label.astype(bool)
    inner = ndimage.binary_erosion(vessel)
    assert inner.sum() > 0  # some vessels are thick enough to have an inside ...
    assert (vessel & ~inner).sum() > inner.sum()  # ... but most labelled voxels are thin vessels / edges
    tissue = (_depth_mm(image, affine) > 4.5) & ~ndimage.binary_dilation(vessel, iterations=2)
    assert image[inner].mean() > 2.0 * np.median(image[tissue])


def test_spacing_is_anisotropic_and_affine_not_identity(phantom):
    _, _, affine = phantom
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert spacing[0] == pytest.approx(spacing[1])
    assert 0.5 <= spacing[0] <= 0.6 and 0.7 <= spacing[2] <= 0.9
    directions = affine[:3, :3] / spacing
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)  # a rotation (+ flips)
    assert not np.allclose(np.abs(directions), np.eye(3), atol=1e-3)  # oblique, not just flipped
    assert np.any(np.diag(directions) < 0)  # at least one flipped axis (LPS-like)
    assert np.all(np.abs(np.diag(directions)) > 0.95)  # still closest to (±R, ±A, ±S) in order
    assert np.linalg.norm(affine[:3, 3]) > 1.0


def test_explicit_spacing_is_used():
    _, _, affine = make_phantom(24, seed=0, spacing=(0.5, 0.5, 1.0))
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.5, 0.5, 1.0])


def test_shell_is_brighter_than_tissue(phantom):
    image, label, affine = phantom
    depth = _depth_mm(image, affine)
    not_vessel = ~ndimage.binary_dilation(label.astype(bool), iterations=2)
    shell = (depth > 1.0) & (depth <= 2.5) & not_vessel  # the skin layer, just inside the head's surface
    tissue = (depth > 4.5) & not_vessel
    assert shell.sum() > 100 and tissue.sum() > 100
    # 0.5 against 0.3 before the bias field, which may tilt them by ±15 % each.
    assert image[shell].mean() > 1.3 * image[tissue].mean()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_image_mip_follows_label_mip(phantom, axis):
    image, label, _ = phantom
    image_mip, label_mip = image.max(axis), label.max(axis).astype(np.float64)
    inside = ndimage.binary_erosion(image_mip > 0.5, iterations=2)  # within the (bright-shell) head disc
    assert 0.05 < label_mip[inside].mean() < 0.9
    correlation = np.corrcoef(image_mip[inside], label_mip[inside])[0, 1]
    assert correlation > 0.35


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="size"):
        make_phantom(8, seed=0)
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(16, seed=0, spacing=(0.5, 0.0, 1.0))
    with pytest.raises(ValueError, match="n"):
        write_phantom_dataset("unused", n=0, size=16, seed=0)


def test_written_dataset_is_byte_identical_for_a_seed(tmp_path):
    first = write_phantom_dataset(tmp_path / "a", n=2, size=20, seed=3)
    second = write_phantom_dataset(tmp_path / "b", n=2, size=20, seed=3)
    other = write_phantom_dataset(tmp_path / "c", n=2, size=20, seed=4)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert [str(p) for p in files] == [
        "dataset.json",
        "imagesTr/phantom_000_0000.nii.gz",
        "imagesTr/phantom_001_0000.nii.gz",
        "labelsTr/phantom_000.nii.gz",
        "labelsTr/phantom_001.nii.gz",
    ]
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / files[1]).read_bytes() != (other / files[1]).read_bytes()


def test_written_dataset_loads_checks_and_matches_make_phantom(tmp_path):
    root = write_phantom_dataset(tmp_path / "ds", n=2, size=20, seed=5)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "MRA"}
    assert meta["labels"] == {"background": 0, "vessel": 1}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    assert meta["name"] and meta["description"]
    assert check_dataset(root) == []
    info = load_dataset(root)
    assert [case.name for case in info.cases] == ["phantom_000", "phantom_001"]
    image, label, affine = make_phantom(20, seed=phantom_seed(5, 1))
    on_disk = read_volume(info.cases[1].image_paths[0])
    on_disk_label = read_volume(info.cases[1].label_path)
    np.testing.assert_array_equal(on_disk.array, image)
    np.testing.assert_array_equal(on_disk_label.array, label)
    assert on_disk_label.array.dtype == np.uint8
    np.testing.assert_allclose(on_disk.affine, affine, atol=1e-5)


def test_rewriting_with_fewer_cases_leaves_a_consistent_dataset(tmp_path):
    root = write_phantom_dataset(tmp_path / "ds", n=3, size=16, seed=0)
    (root / "imagesTr" / "notes.txt").write_text("kept")
    write_phantom_dataset(root, n=2, size=16, seed=0)
    assert [case.name for case in load_dataset(root).cases] == ["phantom_000", "phantom_001"]
    assert check_dataset(root) == []
    assert (root / "imagesTr" / "notes.txt").read_text() == "kept"


def _label_spread(image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> tuple[float, float]:
    """How far the vessels reach: the share of label voxels in the head's outer quarter (by depth), and the
    std of their coordinates against the head's (1 = spread like the head itself)."""
    depth = _depth_mm(image, affine)
    vessels, head = np.argwhere(label > 0), np.argwhere(depth > 0)
    outer = float((depth[label > 0] < 0.25 * depth.max()).mean())
    return outer, float((vessels.std(0) / head.std(0)).mean())


def test_spread_layout_reaches_further_than_the_tangle():
    # Over a few cases the spread trees reach the head's outer part and spread over it; the tangles do not.
    # (At 40³: 0.03 of the spread trees' voxels in the outer quarter against 0 of the tangles', and a
    # spread of 0.63 against 0.55.)
    tangle = np.mean([_label_spread(*make_phantom(40, seed=s)) for s in range(4)], axis=0)
    spread = np.mean([_label_spread(*make_phantom(40, seed=s, layout="spread")) for s in range(4)], axis=0)
    assert spread[0] > tangle[0] + 0.015
    assert spread[1] > tangle[1] + 0.04


@pytest.mark.parametrize("layout", ["spread", "mixed"])
def test_every_layout_gives_plausible_deterministic_phantoms(layout):
    first = make_phantom(SIZE, seed=3, layout=layout)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, make_phantom(SIZE, seed=3, layout=layout)))
    image, label, _ = first
    assert 0.005 <= label.mean() <= 0.08
    assert image[label > 0].mean() > 1.5 * image[(label == 0) & (image > 0.1)].mean()


def test_mixed_layout_draws_both_layouts_case_by_case():
    # "mixed" spends one draw on the choice, so its cases are new ones, not copies of either layout's: tell
    # the kinds apart by the trees' reach instead (over 8 cases at 32³ it runs from 0.46 to 0.59).
    reach = [_label_spread(*make_phantom(SIZE, seed=s, layout="mixed"))[1] for s in range(8)]
    assert max(reach) - min(reach) > 0.05
    assert make_phantom(SIZE, seed=0, layout="mixed")[1].tobytes() != make_phantom(SIZE, seed=0)[1].tobytes()


def test_unknown_layout_is_refused_and_the_cli_offers_every_layout():
    from vol25d.cli import build_parser
    from vol25d.data.phantom import LAYOUTS

    with pytest.raises(ValueError, match="layout must be one of tangle, spread, mixed"):
        make_phantom(SIZE, seed=0, layout="grid")
    with pytest.raises(ValueError, match="layout"):
        write_phantom_dataset("unused", n=1, size=16, seed=0, layout="grid")
    commands = next(a for a in build_parser()._actions if a.dest == "command" or getattr(a, "choices", None)
                    and "make-phantoms" in a.choices)
    layout = next(a for a in commands.choices["make-phantoms"]._actions if a.dest == "layout")
    assert tuple(layout.choices) == LAYOUTS

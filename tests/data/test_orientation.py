"""Tests for vol25d.data.orientation: the (X, Y, Z) ↔ (D, H, W) mapping and its exact inverse."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from vol25d.data.orientation import canonical_frame, from_canonical, to_canonical
from vol25d.errors import InputError


@st.composite
def oriented_images(draw):
    """A random (X, Y, Z[, C]) index-coded array with an affine = axis permutation · flips · small obliquity."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=3, max_size=3)))
    channels = draw(st.sampled_from([None, 1, 2]))
    permutation = draw(st.permutations([0, 1, 2]))
    flips = np.array(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3)))
    spacing = np.array(draw(st.lists(st.floats(0.3, 5.0), min_size=3, max_size=3)))
    tilt_deg = draw(st.floats(0.0, 30.0))
    axis = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3))) + [0.0, 0.0, 1e-3]
    rotation = Rotation.from_rotvec(np.deg2rad(tilt_deg) * axis / np.linalg.norm(axis)).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ (np.eye(3)[:, permutation] * flips) @ np.diag(spacing)
    affine[:3, 3] = draw(st.lists(st.floats(-100.0, 100.0), min_size=3, max_size=3))
    full = shape if channels is None else shape + (channels,)
    array = np.arange(int(np.prod(full)), dtype=np.int64).reshape(full)
    return array, affine, draw(st.sampled_from(["SI", "AP", "LR"]))


@settings(max_examples=150, deadline=None)
@given(oriented_images())
def test_round_trip_is_exact_and_canonical_affine_is_ras_diagonal(case):
    array, affine, rotation_axis = case
    canonical, spacing_dhw, frame = to_canonical(array, affine, rotation_axis)
    # Channels first for 4-D input, plain (D, H, W) for 3-D.
    if array.ndim == 4:
        assert canonical.shape == (array.shape[3], *frame.shape_dhw)
    else:
        assert canonical.shape == frame.shape_dhw
    np.testing.assert_array_equal(from_canonical(canonical, frame), array)

    ras = frame.ras_affine[:3, :3]
    for column in range(3):  # each RAS-reoriented axis points (mostly) along +R, +A, +S
        assert np.argmax(np.abs(ras[:, column])) == column
        assert ras[column, column] > 0
    np.testing.assert_allclose(spacing_dhw, np.linalg.norm(frame.affine_dhw[:3, :3], axis=0))

    # Every canonical voxel is the original voxel at the same world position.
    index = np.stack(np.meshgrid(*[np.arange(n) for n in frame.shape_dhw], indexing="ij"), -1).reshape(-1, 3)
    world = frame.affine_dhw[:3, :3] @ index.T + frame.affine_dhw[:3, 3:]
    original = np.rint(np.linalg.solve(affine[:3, :3], world - affine[:3, 3:])).astype(int)
    values = canonical[0] if array.ndim == 4 else canonical
    expected = array[original[0], original[1], original[2]]
    np.testing.assert_array_equal(values.reshape(-1), (expected[:, 0] if array.ndim == 4 else expected))


def test_si_default_is_z_y_x_for_ras_image():
    array = np.arange(24).reshape(2, 3, 4)
    canonical, spacing, _ = to_canonical(array, np.diag([1.0, 2.0, 3.0, 1.0]))
    np.testing.assert_array_equal(canonical, array.transpose(2, 1, 0))
    assert spacing == (3.0, 2.0, 1.0)


@pytest.mark.parametrize("rotation_axis, expected", [("SI", (4, 3, 2)), ("AP", (3, 4, 2)), ("LR", (2, 4, 3))])
def test_rotation_axis_picks_d(rotation_axis, expected):
    _, _, frame = to_canonical(np.zeros((2, 3, 4)), np.eye(4), rotation_axis)
    assert frame.shape_dhw == expected


def test_lps_image_is_flipped_to_ras():
    array = np.arange(24).reshape(2, 3, 4)
    canonical, _, _ = to_canonical(array, np.diag([-1.0, -1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(canonical, array[::-1, ::-1, :].transpose(2, 1, 0))


def test_from_canonical_accepts_other_channel_counts():
    _, _, frame = to_canonical(np.zeros((2, 3, 4)), np.diag([-1.0, 1.0, -1.0, 1.0]))
    probabilities = np.random.default_rng(0).random((3, *frame.shape_dhw))
    back = from_canonical(probabilities, frame)
    assert back.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(from_canonical(probabilities[1], frame), back[..., 1])


def test_bad_arguments_name_the_value():
    with pytest.raises(InputError, match="rotation_axis.*'XY'"):
        canonical_frame(np.eye(4), (2, 2, 2), "XY")
    _, _, frame = to_canonical(np.zeros((2, 3, 4)), np.eye(4))
    with pytest.raises(InputError, match=r"\(4, 3, 2\).*\(2, 3, 4\)"):
        from_canonical(np.zeros((2, 3, 4)), frame)

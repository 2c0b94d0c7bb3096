"""Tests for vol25d.data.preprocess: geometry of preprocess → restore, voxel cap, normalisation, N4."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vol25d.data.preprocess import PreprocessConfig, preprocess_image, preprocess_label, restore
from vol25d.errors import InputError
from vol25d.io import Volume


def oblique_lps_affine(spacing=(1.1, 0.9, 2.5)) -> np.ndarray:
    """LPS-flipped, 15° oblique, anisotropic voxel → RAS affine."""
    rotation = Rotation.from_euler("xyz", [10.0, -8.0, 15.0], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag(spacing)
    affine[:3, 3] = [20.0, 15.0, -12.0]
    return affine


def world_coordinates(shape, affine) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return index @ affine[:3, :3].T + affine[:3, 3]


def sphere_case(shape=(30, 26, 12), radius_mm=6.0, seed=0):
    """An oblique LPS image: a body (a bright-ish ellipsoid in air) with a brighter sphere, and its label."""
    affine = oblique_lps_affine()
    world = world_coordinates(shape, affine)
    body_centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    centre = body_centre + [3.0, -2.0, 1.5]
    label = (np.linalg.norm(world - centre, axis=-1) <= radius_mm).astype(np.uint8)
    body = np.linalg.norm((world - body_centre) / [14.0, 12.0, 14.0], axis=-1) <= 1.0
    rng = np.random.default_rng(seed)
    image = 0.05 + 0.4 * body + 0.5 * label + 0.02 * rng.standard_normal(shape)
    return Volume(image.astype(np.float32), affine), Volume(label, affine), centre


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("target", [(2.0, 1.0, 1.0), (1.5, 1.5, 1.5), None])
def test_label_round_trip_lands_on_the_same_voxels(target):
    image, label, centre = sphere_case()
    config = PreprocessConfig(target_spacing_mm=target)
    tensor, info = preprocess_image(image, config)
    assert tensor.dtype == torch.float32 and tensor.shape == (1, *info.padded_shape)
    spacing = info.spacing_dhw
    assert spacing[1] == pytest.approx(spacing[2], rel=1e-9)
    np.testing.assert_allclose(np.linalg.norm(info.affine[:3, :3], axis=0), spacing, rtol=1e-9)

    target_label = preprocess_label(label, info, num_classes=1)
    assert target_label.dtype == torch.uint8 and target_label.shape == (1, *info.padded_shape)
    # The label's centroid on the model grid is at the sphere's world position.
    index = np.argwhere(target_label[0].numpy()).mean(axis=0)
    world = info.affine[:3, :3] @ index + info.affine[:3, 3]
    assert np.linalg.norm(world - centre) < 0.5 * max(spacing)

    volume = restore(target_label.float(), info)
    np.testing.assert_array_equal(volume.affine, image.affine)  # the input's own grid, shape and affine
    restored = volume.array
    assert restored.shape == (*image.shape, 1) and restored.dtype == np.float32
    assert dice(restored[..., 0] >= 0.5, label.array > 0) >= 0.9


def test_restore_is_identity_on_the_native_grid_without_crop():
    image, label, _ = sphere_case()
    config = PreprocessConfig(crop_foreground=False, rotation_axis="AP")
    tensor, info = preprocess_image(image, config)
    # No target spacing: D keeps its spacing; H, W take the finer in-plane one.
    restored = restore(preprocess_label(label, info, 1).float(), info).array
    assert dice(restored[..., 0] >= 0.5, label.array > 0) >= 0.9


def test_body_crop_cuts_air_and_restore_pads_zero():
    image, label, _ = sphere_case(shape=(30, 26, 12))
    big = np.zeros((50, 46, 20), np.float32) + 0.05
    big[10:40, 10:36, 4:16] = image.array
    affine = image.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ [10, 10, 4]
    tensor, info = preprocess_image(Volume(big, affine), PreprocessConfig(target_spacing_mm=(2.5, 0.9, 0.9)))
    assert np.prod(np.subtract(info.crop_stop, info.crop_start)) < 0.8 * big.size
    restored = restore(torch.ones(1, *info.padded_shape), info).array[..., 0]
    assert restored[0, 0, 0] == 0.0 and restored[25, 23, 10] == pytest.approx(1.0)


@pytest.mark.parametrize("shape, spacing", [((64, 64, 6), (0.7, 0.7, 7.0)), ((30, 32, 28), (1.0, 1.0, 1.0))])
def test_voxel_cap_is_honoured_and_geometry_kept(shape, spacing):
    affine = np.diag([*spacing, 1.0])
    rng = np.random.default_rng(0)
    image = Volume(rng.random(shape).astype(np.float32), affine)
    config = PreprocessConfig(target_spacing_mm=(0.5, 0.5, 0.5), max_voxels=4096, crop_foreground=False)
    tensor, info = preprocess_image(image, config)
    assert int(np.prod(tensor.shape[1:])) <= 4096
    assert min(tensor.shape[1:]) >= 8
    assert info.spacing_dhw[1] == pytest.approx(info.spacing_dhw[2])
    # Uniform coarsening keeps the target's proportions.
    np.testing.assert_allclose(np.divide(info.spacing_dhw, 0.5), info.spacing_dhw[0] / 0.5, rtol=1e-9)
    assert restore(torch.zeros(2, *tensor.shape[1:]), info).array.shape == (*shape, 2)


@pytest.mark.parametrize("normalization", ["percentile", "zscore"])
def test_normalisation_ignores_scale_and_offset(normalization):
    image, _, _ = sphere_case()
    config = PreprocessConfig(target_spacing_mm=(2.0, 1.0, 1.0), normalization=normalization)
    reference, info = preprocess_image(image, config)
    shifted, info2 = preprocess_image(Volume(image.array * 37.0 + 500.0, image.affine), config)
    assert info2.crop_start == info.crop_start and info2.crop_stop == info.crop_stop
    np.testing.assert_allclose(shifted.numpy(), reference.numpy(), atol=2e-4)
    if normalization == "percentile":
        assert reference.min() == 0.0 and reference.max() == 1.0


def test_n4_runs_and_flattens_a_bias_field():
    shape = (16, 16, 16)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid**2).sum(0) < 0.8
    bias = np.exp(0.5 * grid[0])
    image = Volume(((100.0 * body + 5.0) * bias).astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0]))
    config = PreprocessConfig(crop_foreground=False, normalization="zscore", n4=True)
    corrected, _ = preprocess_image(image, config)
    plain, _ = preprocess_image(image, PreprocessConfig(crop_foreground=False, normalization="zscore"))
    inside = torch.from_numpy(body.transpose(2, 1, 0).copy())
    assert torch.isfinite(corrected).all() and corrected.shape == plain.shape
    assert corrected[0][inside].std() < plain[0][inside].std()


def test_multichannel_and_multi_label():
    image, label, _ = sphere_case()
    second = Volume(image.array * 2.0 + 1.0, image.affine)
    tensor, info = preprocess_image([image, second], PreprocessConfig(target_spacing_mm=(2.0, 1.0, 1.0)))
    assert tensor.shape[0] == 2
    np.testing.assert_allclose(tensor[0].numpy(), tensor[1].numpy(), atol=2e-4)
    stacked = np.stack([label.array, 1 - label.array], axis=-1)
    target = preprocess_label(Volume(stacked, label.affine), info, num_classes=2, multi_label=True)
    assert target.shape == (2, *info.padded_shape)
    integer = preprocess_label(Volume(label.array * 2, label.affine), info, num_classes=2)
    assert integer[0].sum() == 0 and torch.equal(integer[1], target[0])


def test_bad_labels_and_configs_are_named():
    image, label, _ = sphere_case()
    _, info = preprocess_image(image, PreprocessConfig())
    with pytest.raises(InputError, match=r"values \[3\]"):
        preprocess_label(Volume(label.array * 3, label.affine, "lab.nii.gz"), info, num_classes=2)
    with pytest.raises(InputError, match=r"values \[0.5\]"):
        preprocess_label(Volume(label.array * 0.5, label.affine), info, num_classes=1)
    with pytest.raises(InputError, match="lab.nii.gz.*grid"):
        preprocess_label(Volume(label.array[:-1], label.affine, "lab.nii.gz"), info, num_classes=1)
    with pytest.raises(InputError, match="H == W"):
        PreprocessConfig(target_spacing_mm=(1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="'minmax'"):
        PreprocessConfig(normalization="minmax")


@pytest.mark.parametrize("tolerance", [0.5, 0.0])
def test_a_spacing_close_to_the_target_keeps_the_native_grid(tolerance):
    affine = np.diag([-0.55, -0.55, 0.8, 1.0])  # (X, Y, Z) = (L→R flipped, P→A flipped, S): (D, H, W) = (0.8, 0.55, 0.55)
    rng = np.random.default_rng(1)
    label = np.zeros((40, 40, 30), dtype=np.uint8)
    steps = np.arange(28)
    label[6 + steps, 5 + steps, 1 + steps] = 1  # an oblique vessel one voxel thin
    image = (0.3 + 0.6 * label + 0.05 * rng.standard_normal(label.shape)).astype(np.float32)
    config = PreprocessConfig(target_spacing_mm=(0.85, 0.5, 0.5), spacing_tolerance=tolerance, crop_foreground=False)
    tensor, info = preprocess_image(Volume(image, affine), config)
    restored = restore(preprocess_label(Volume(label, affine), info, 1), info).array[..., 0] >= 0.5
    if tolerance:
        assert info.scale == (1.0, 1.0, 1.0) and info.spacing_dhw == pytest.approx((0.8, 0.55, 0.55))
        assert tuple(tensor.shape[1:]) == (30, 40, 40)
        assert np.array_equal(restored, label > 0)
    else:
        assert info.spacing_dhw == pytest.approx((0.85, 0.5, 0.5))
        assert dice(restored, label > 0) < 0.8  # what the resampling round trip costs a thin vessel


def test_spacing_tolerance_is_checked():
    with pytest.raises(InputError, match="spacing_tolerance"):
        PreprocessConfig(spacing_tolerance=1.5)


def test_settings_saved_before_spacing_tolerance_keep_resampling():
    saved = {k: v for k, v in PreprocessConfig().to_dict().items() if k != "spacing_tolerance"}
    assert PreprocessConfig.from_dict(saved).spacing_tolerance == 0.0
    assert PreprocessConfig.from_dict(PreprocessConfig().to_dict()).spacing_tolerance == 0.5


def test_a_label_off_the_images_grid_is_refused_with_check_datas_tolerance():
    """Preprocessing and check-data share io.grid_mismatch: 1e-5 mm off is the same grid, 5e-3 mm is not."""
    image, label, _ = sphere_case()
    _, info = preprocess_image(image, PreprocessConfig(crop_foreground=False))
    for shift_mm, same in ((1e-5, True), (5e-3, False)):
        affine = label.affine.copy()
        affine[0, 3] += shift_mm
        moved = Volume(label.array, affine, label.path)
        if same:
            assert preprocess_label(moved, info, 1).shape[0] == 1
        else:
            with pytest.raises(InputError, match="origin by 0.005 mm"):
                preprocess_label(moved, info, 1)

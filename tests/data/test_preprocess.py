"""Tests for vol25d.data.preprocess: geometry of preprocess → restore, voxel cap, normalisation, N4, planning."""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from vol25d.data.orientation import canonical_frame
from vol25d.data.preprocess import (
    PreprocessConfig,
    plan_from_volumes,
    plan_preprocessing,
    preprocess_image,
    preprocess_label,
    restore,
)
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

    restored = restore(target_label.float(), info)
    assert restored.shape == (*image.shape, 1) and restored.dtype == np.float32
    assert dice(restored[..., 0] >= 0.5, label.array > 0) >= 0.9


def test_restore_is_identity_on_the_native_grid_without_crop():
    image, label, _ = sphere_case()
    config = PreprocessConfig(crop_foreground=False, rotation_axis="AP")
    tensor, info = preprocess_image(image, config)
    # No target spacing: D keeps its spacing; H, W take the finer in-plane one.
    restored = restore(preprocess_label(label, info, 1).float(), info)
    assert dice(restored[..., 0] >= 0.5, label.array > 0) >= 0.9


def test_body_crop_cuts_air_and_restore_pads_zero():
    image, label, _ = sphere_case(shape=(30, 26, 12))
    big = np.zeros((50, 46, 20), np.float32) + 0.05
    big[10:40, 10:36, 4:16] = image.array
    affine = image.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ [10, 10, 4]
    tensor, info = preprocess_image(Volume(big, affine), PreprocessConfig(target_spacing_mm=(2.5, 0.9, 0.9)))
    assert np.prod(np.subtract(info.crop_stop, info.crop_start)) < 0.8 * big.size
    restored = restore(torch.ones(1, *info.padded_shape), info)[..., 0]
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
    assert restore(torch.zeros(2, *tensor.shape[1:]), info).shape == (*shape, 2)


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


def test_plan_uses_median_finer_in_plane_and_cap():
    cases = [((3.0, 0.8, 0.9), (40, 200, 200)), ((2.0, 0.7, 0.8), (60, 220, 210)), ((2.5, 0.6, 0.7), (50, 180, 190))]
    config = plan_preprocessing(cases, max_voxels=10**9)
    assert config.target_spacing_mm == pytest.approx((2.5, 0.7, 0.7))
    capped = plan_preprocessing(cases, max_voxels=64**3)
    factor = capped.target_spacing_mm[0] / 2.5
    assert factor > 1 and capped.target_spacing_mm == pytest.approx((2.5 * factor, 0.7 * factor, 0.7 * factor))
    fixed = plan_preprocessing(cases, target_spacing_mm=(1.0, 0.5, 0.5), max_voxels=10**9)
    assert fixed.target_spacing_mm == (1.0, 0.5, 0.5)
    extent = np.median([np.multiply(s, n) for s, n in cases], axis=0)
    assert np.prod(np.maximum(np.rint(extent / capped.target_spacing_mm), 8)) <= 64**3


def test_plan_from_volumes_and_json_round_trip():
    image, _, _ = sphere_case()
    config = plan_from_volumes([image, Volume(image.array * 2, image.affine)], normalization="zscore")
    frame = canonical_frame(image.affine, image.shape)
    assert config.target_spacing_mm == pytest.approx((frame.spacing_dhw[0],) + (min(frame.spacing_dhw[1:]),) * 2)
    assert len(config.intensity_stats) == 1 and len(config.intensity_stats[0]) == 5
    low, high, median, _, _ = config.intensity_stats[0]
    assert low < median < high
    again = PreprocessConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(InputError, match="planned for 1"):
        preprocess_image([image, image], config)
    with pytest.raises(InputError, match="unknown keys"):
        PreprocessConfig.from_dict({**config.to_dict(), "spacing": 1})


def test_plan_from_a_generator_keeps_no_image_and_plans_as_from_a_list():
    cases = [sphere_case(shape, seed=seed)[0] for seed, shape in enumerate([(30, 26, 12), (24, 30, 10), (28, 28, 14)])]
    alive_when_next_read = []

    def stream():
        previous = None
        for case in cases:
            gc.collect()
            alive_when_next_read.append(previous is not None and previous() is not None)
            image = Volume(case.array.copy(), case.affine)  # a fresh array, as a file read gives
            previous = weakref.ref(image.array.base if image.array.base is not None else image.array)
            yield image
            del image

    assert plan_from_volumes(stream(), seed=1) == plan_from_volumes(cases, seed=1)
    assert alive_when_next_read == [False, False, False]  # the previous image was dropped before the next read


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
    restored = restore(preprocess_label(Volume(label, affine), info, 1), info)[..., 0] >= 0.5
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

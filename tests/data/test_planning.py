"""Tests for vol25d.data.planning: the target spacing, the voxel cap and the intensity statistics of a plan."""

from __future__ import annotations

import gc
import json
import math
import weakref

import numpy as np
import pytest

from test_preprocess import sphere_case
from vol25d.data.orientation import canonical_frame
from vol25d.data.planning import plan_from_volumes, plan_preprocessing, with_voxel_cap
from vol25d.data.preprocess import PreprocessConfig, preprocess_image
from vol25d.errors import InputError
from vol25d.io import Volume


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


def test_a_cap_coarsens_the_plan_only_when_the_median_image_is_over_it():
    planned = PreprocessConfig(target_spacing_mm=(1.0, 0.5, 0.5), max_voxels=0, planned_shape=(100, 200, 200))
    same = with_voxel_cap(planned, 10**7)
    assert same.target_spacing_mm == (1.0, 0.5, 0.5) and same.max_voxels == 10**7
    coarse = with_voxel_cap(planned, 10**6)
    assert coarse.max_voxels == 10**6 and math.prod(coarse.planned_shape) <= 10**6
    ratio = np.divide(coarse.target_spacing_mm, planned.target_spacing_mm)
    assert np.allclose(ratio, ratio[0]) and ratio[0] > 1.5
    assert with_voxel_cap(planned, 0).target_spacing_mm == (1.0, 0.5, 0.5)

"""Planning the preprocessing from a training set, as nnU-Net plans it: the target spacing (the median, finer
in-plane), the median image's grid at it, a voxel cap, and intensity statistics sampled from the images.

Applying the plan is :mod:`vol25d.data.preprocess`; the cap a GPU can hold is :mod:`vol25d.capacity`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Iterable, Sequence

import numpy as np

from vol25d.data.orientation import to_canonical
from vol25d.data.preprocess import (
    DEFAULT_MAX_VOXELS, PreprocessConfig, _body_mask, _grid, _mm, _stack_channels,
)
from vol25d.errors import InputError
from vol25d.io import Volume

__all__ = ["plan_preprocessing", "plan_from_volumes", "with_voxel_cap"]

log = logging.getLogger(__name__)


def plan_preprocessing(
    spacings_and_shapes: Sequence[tuple[Sequence[float], Sequence[int]]],
    intensity_samples: Sequence[np.ndarray] = (),
    **options,
) -> PreprocessConfig:
    """Choose the target spacing and record intensity statistics from a training set (nnU-Net style).

    The target is the median spacing per axis, with ``H = W =`` the finer of the median ``H`` and ``W``
    spacings (keeping in-plane detail; thin vessels are what we segment). If the median image (its median
    physical extent) resampled to it would exceed ``max_voxels``, all three spacings are coarsened by one
    common factor.

    Args:
        spacings_and_shapes: per training case, ``(spacing_dhw, shape_dhw)`` in canonical ``(D, H, W)``
            order (``canonical_frame(affine, shape).spacing_dhw`` / ``.shape_dhw``).
        intensity_samples: per channel, a 1-D array of body-voxel intensities pooled over the training images
            (see :func:`plan_from_volumes`); empty to record none.
        **options: any other :class:`PreprocessConfig` field (``max_voxels``, ``normalization`` …); a given
            ``target_spacing_mm`` replaces the median (the cap still applies).

    Returns:
        The :class:`PreprocessConfig`.
    """
    if not spacings_and_shapes:
        raise InputError("plan_preprocessing needs at least one training case; got none")
    spacing = np.asarray([s for s, _ in spacings_and_shapes], dtype=np.float64)
    extent_mm = np.median(spacing * np.asarray([n for _, n in spacings_and_shapes], dtype=np.float64), axis=0)
    median = np.median(spacing, axis=0)
    target = np.array(options.pop("target_spacing_mm", None) or (median[0], min(median[1:]), min(median[1:])))
    max_voxels = int(options.pop("max_voxels", DEFAULT_MAX_VOXELS))
    planned = tuple(int(n) for n in np.maximum(1, np.rint(extent_mm / target)))
    percentiles = options.get("percentiles", PreprocessConfig.percentiles)
    stats = tuple(
        (*np.percentile(v, percentiles), float(np.median(v)), float(np.mean(v)), float(np.std(v)))
        for v in (np.asarray(s, dtype=np.float64).ravel() for s in intensity_samples)
    )
    config = PreprocessConfig(target_spacing_mm=tuple(target), intensity_stats=stats, max_voxels=0,
                              planned_shape=planned, **options)
    return with_voxel_cap(config, max_voxels)


def with_voxel_cap(config: PreprocessConfig, max_voxels: int) -> PreprocessConfig:
    """``config`` under a voxel cap: when its planned (median) image exceeds ``max_voxels``, the target
    spacing is coarsened by one common factor until it fits, and the reason is logged.

    Args:
        config: a planned configuration (``planned_shape`` set).
        max_voxels: the cap (``0``: none).

    Returns:
        The configuration with ``max_voxels`` and, if coarsened, ``target_spacing_mm`` and ``planned_shape``.
    """
    if config.planned_shape is None or config.target_spacing_mm is None:
        return replace(config, max_voxels=max_voxels)
    target = np.asarray(config.target_spacing_mm, dtype=np.float64)
    shape, _, _, coarse = _grid(config.planned_shape, target, target, max_voxels)
    if not np.allclose(coarse, target):
        log.info("the median training image, %s voxels at %s mm, is over the cap of %d voxels: training at "
                 "%s mm (%s voxels)", "×".join(map(str, config.planned_shape)), _mm(target), max_voxels,
                 _mm(coarse), "×".join(map(str, shape)))
    return replace(config, max_voxels=max_voxels, target_spacing_mm=tuple(float(t) for t in coarse),
                   planned_shape=tuple(shape))


def plan_from_volumes(images: Iterable[Volume | Sequence[Volume]], *, samples_per_image: int = 20_000,
                      seed: int = 0, **options) -> PreprocessConfig:
    """:func:`plan_preprocessing` from training images (Volume, or one Volume per channel, per case).

    ``images`` may be a generator: each image is used once, for its spacing, shape and a sample of up to
    ``samples_per_image`` random body voxels per channel, and not kept — memory is one image plus the samples.
    """
    rotation_axis = options.get("rotation_axis", "SI")
    rng = np.random.default_rng(seed)
    geometry, samples = [], []
    for image in images:
        array, affine, _ = _stack_channels(image)
        canonical, spacing, frame = to_canonical(array, affine, rotation_axis)
        geometry.append((spacing, frame.shape_dhw))
        stride = [max(1, math.ceil(n / 64)) for n in frame.shape_dhw]
        small = np.ascontiguousarray(canonical[:, :: stride[0], :: stride[1], :: stride[2]])
        body = _body_mask(small)
        picked = [c[body] if body.any() else c.ravel() for c in small]
        picked = [p[rng.choice(p.size, min(p.size, samples_per_image), replace=False)] for p in picked]
        samples = picked if not samples else [np.concatenate(pair) for pair in zip(samples, picked)]
        del image, array, canonical  # before the next image is read: one native-size image at a time
    return plan_preprocessing(geometry, samples, **options)

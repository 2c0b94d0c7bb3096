"""From a file's voxels to the model's tensor and back: orientation, body crop, resampling, normalisation.

``preprocess_image`` turns a :class:`~vol25d.io.Volume` ``(X, Y, Z[, C])`` into a float32 tensor
``(C, D, H, W)`` on an isotropic-in-plane grid of at most ``max_voxels`` voxels, and returns a
:class:`RestoreInfo`; ``restore`` uses it to bring ``(K, D, H, W)`` probabilities back to the input's own
grid ``(X, Y, Z, K)``, which is then written with the input's affine. ``preprocess_label`` puts a label map on
the same grid as its image. :mod:`vol25d.data.planning` chooses the settings from a training set.

Resampling is linear and separable, with exact voxel-centre geometry: along each axis the output voxel ``j``
sits at input voxel coordinate ``x = a·j + b`` with ``a = target / native spacing`` and the two grids sharing
their centre, so the output spacing is exactly the target spacing (``H`` and ``W`` stay exactly equal, as the
projector needs) and ``restore`` samples the inverse map ``j = (x − b) / a``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from vol25d.data.orientation import ROTATION_AXES, CanonicalFrame, from_canonical, to_canonical
from vol25d.errors import InputError
from vol25d.io import Volume, grid_mismatch

__all__ = [
    "DEFAULT_MAX_VOXELS", "PreprocessConfig", "RestoreInfo", "preprocess_image", "preprocess_label", "restore",
]

log = logging.getLogger(__name__)

# The voxel cap of CPU training: 128³ ≈ 2.1 M voxels keeps a path-1 step around a second on two cores and the
# demo in minutes. On a GPU, ``vol25d train`` plans the cap from the device's memory instead
# (:mod:`vol25d.capacity`); ``0`` means no cap.
DEFAULT_MAX_VOXELS = 128**3
MIN_SIZE = 8  # every axis is padded to at least this many voxels (the U-Net's downsampling needs some room)
_BODY_MARGIN_MM = 5.0
_BODY_THRESHOLD = 0.1  # fraction of the smoothed image's 1–99 % range above which a voxel is body
_STATS = ("p_low", "p_high", "median", "mean", "std")


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings: stored in the run folder and the checkpoint (``to_dict``), so predict repeats them.

    Attributes:
        target_spacing_mm: voxel size ``(D, H, W)`` in mm with ``H == W``; ``None`` keeps each image's native
            ``D`` spacing and resamples ``H, W`` to the finer of the two in-plane spacings.
        spacing_tolerance: an image whose own spacing is within this relative difference of the target on
            every axis (and equal along ``H`` and ``W``) keeps its native grid, since resampling a vessel one or
            two voxels thin and back blurs it away (docs/method.md, "Images close to the training spacing keep
            their own grid"). ``0`` always resamples (nnU-Net's rule); the voxel cap applies either way.
        max_voxels: cap on ``D·H·W`` per image (after padding to ≥ 8); a larger image gets a uniformly
            coarser spacing. ``0``: no cap. Enforced at training and prediction time alike, so a checkpoint
            predicts on the grid it was trained on, whatever the machine.
        normalization: ``"percentile"`` (clip to the image's body percentiles and scale to [0, 1]) or
            ``"zscore"`` (body mean 0, std 1). Both per image and per channel, so ``a·x + b`` (a > 0) gives the
            same tensor: models transfer across scanners and phantom generators.
        percentiles: the clip percentiles of ``"percentile"`` normalisation.
        crop_foreground: crop to the body's bounding box (plus 5 mm) before resampling.
        n4: N4 bias-field correction (SimpleITK), done on the resampled grid where it is cheap.
        rotation_axis: ``"SI"``, ``"AP"`` or ``"LR"``: the anatomical axis that becomes ``D``.
        intensity_stats: per channel ``(p_low, p_high, median, mean, std)`` of the training images' body
            voxels in raw units (``plan_preprocessing``); a record of the training data, not used by the
            per-image normalisation, checked only for the channel count.
        planned_shape: ``(D, H, W)`` of the median training image (its median extent) at the target spacing,
            as planned; a record, ``None`` in settings saved before it existed.
    """

    target_spacing_mm: tuple[float, float, float] | None = None
    spacing_tolerance: float = 0.5
    max_voxels: int = DEFAULT_MAX_VOXELS
    normalization: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    crop_foreground: bool = True
    n4: bool = False
    rotation_axis: str = "SI"
    intensity_stats: tuple[tuple[float, ...], ...] = ()
    planned_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise lists from JSON to tuples with object.__setattr__.
        if self.target_spacing_mm is not None:
            spacing = tuple(float(s) for s in self.target_spacing_mm)
            if len(spacing) != 3 or min(spacing) <= 0 or not math.isclose(spacing[1], spacing[2], rel_tol=1e-6):
                raise InputError(
                    f"target_spacing_mm must be three positive (D, H, W) spacings with H == W; got {spacing}"
                )
            object.__setattr__(self, "target_spacing_mm", spacing)
        if not 0.0 <= float(self.spacing_tolerance) < 1.0:
            raise InputError(f"spacing_tolerance must be in [0, 1); got {self.spacing_tolerance}")
        object.__setattr__(self, "spacing_tolerance", float(self.spacing_tolerance))
        if isinstance(self.max_voxels, bool) or int(self.max_voxels) != self.max_voxels or (
                self.max_voxels != 0 and int(self.max_voxels) < MIN_SIZE**3):
            raise InputError(f"max_voxels must be 0 (no cap) or a whole number ≥ {MIN_SIZE**3}; got {self.max_voxels!r}")
        if self.planned_shape is not None:
            object.__setattr__(self, "planned_shape", tuple(int(n) for n in self.planned_shape))
        if self.normalization not in ("percentile", "zscore"):
            raise InputError(f"normalization must be 'percentile' or 'zscore'; got {self.normalization!r}")
        low, high = (float(p) for p in self.percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise InputError(f"percentiles must satisfy 0 ≤ low < high ≤ 100; got {self.percentiles}")
        if self.rotation_axis not in ROTATION_AXES:
            raise InputError(f"rotation_axis must be one of {sorted(ROTATION_AXES)}; got {self.rotation_axis!r}")
        object.__setattr__(self, "max_voxels", int(self.max_voxels))
        object.__setattr__(self, "percentiles", (low, high))
        object.__setattr__(self, "intensity_stats", tuple(tuple(float(v) for v in c) for c in self.intensity_stats))

    def to_dict(self) -> dict:
        """JSON-able dict (lists for tuples)."""
        return {k: (list(map(list, v)) if k == "intensity_stats" else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a checkpoint from another version)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"preprocessing settings have unknown keys {sorted(unknown)}; expected "
                             f"{[f.name for f in fields(cls)]}")
        # Settings saved before spacing_tolerance existed were always resampled: predict as they trained.
        return cls(**{"spacing_tolerance": 0.0, **data})


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class RestoreInfo:
    """How one image was preprocessed: enough to map the model's grid back to the file's.

    Attributes:
        frame: the canonical frame of the input (original shape, affine, orientation).
        crop_start, crop_stop: the body box in canonical native voxels ``(D, H, W)``.
        scale, offset: per axis, output voxel ``j`` sits at cropped native coordinate ``scale·j + offset``.
        resampled_shape: ``(D, H, W)`` after resampling; ``padded_shape``: after padding to ≥ 8.
        spacing_dhw: the output grid's voxel size in mm.
    """

    frame: CanonicalFrame
    crop_start: tuple[int, int, int]
    crop_stop: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    resampled_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    spacing_dhw: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` affine of the preprocessed grid: voxel ``(d, h, w, 1)`` → RAS+ world mm."""
        to_native = np.diag([*self.scale, 1.0])
        to_native[:3, 3] = np.add(self.crop_start, self.offset)
        return self.frame.affine_dhw @ to_native


def _robust_unit(channel: np.ndarray) -> np.ndarray:
    low, high = np.percentile(channel, (1.0, 99.0))
    return (channel - low) / max(high - low, 1e-12)


def _body_mask(image: np.ndarray) -> np.ndarray:
    """Body voxels of ``(C, D, H, W)``: smoothed intensity above 10 % of its robust range, small islands dropped.

    Thresholds are relative to percentiles, so the mask does not change under ``a·x + b``.
    """
    smooth = ndimage.gaussian_filter(np.max([_robust_unit(c) for c in image], axis=0), 1.0)
    low, high = np.percentile(smooth, (1.0, 99.0))
    mask = smooth > low + _BODY_THRESHOLD * (high - low)
    labels, count = ndimage.label(mask)
    if count > 1:  # drop noise islands, keep every part of the body (two legs are two components)
        sizes = np.bincount(labels.ravel())[1:]
        mask = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.05 * sizes.max()))
    return mask


def _body_box(image: np.ndarray, spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box ``(start, stop)`` of the body plus a 5 mm margin, found on a ≤ 64-per-axis strided copy."""
    shape = image.shape[1:]
    stride = [max(1, math.ceil(n / 64)) for n in shape]
    mask = _body_mask(image[:, :: stride[0], :: stride[1], :: stride[2]].astype(np.float32))
    if not mask.any():
        return (0, 0, 0), tuple(shape)
    start, stop = [], []
    for axis, (n, k) in enumerate(zip(shape, stride)):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        margin = math.ceil(_BODY_MARGIN_MM / spacing[axis]) + k
        start.append(max(0, int(hit[0]) * k - margin))
        stop.append(min(n, (int(hit[-1]) + 1) * k + margin))
    return tuple(start), tuple(stop)


def _close_to(spacing: Sequence[float], target: Sequence[float], tolerance: float) -> bool:
    """Whether a native ``(D, H, W)`` spacing may stand for ``target``: square in-plane voxels and every axis
    within ``tolerance`` (relative) of the target's."""
    square = math.isclose(spacing[1], spacing[2], rel_tol=1e-4)
    return square and all(abs(s / t - 1.0) <= tolerance for s, t in zip(spacing, target))


def _grid(native_shape, native_spacing, target_spacing, max_voxels):
    """Output shape and per-axis ``(scale, offset)`` for the centred grid at ``target_spacing`` under the cap."""
    native_shape, native_spacing = np.asarray(native_shape), np.asarray(native_spacing, dtype=np.float64)
    target = np.asarray(target_spacing, dtype=np.float64)
    for _ in range(50):
        shape = np.maximum(1, np.rint(native_shape * native_spacing / target)).astype(int)
        voxels = float(np.prod(np.maximum(shape, MIN_SIZE)))
        if not max_voxels or voxels <= max_voxels:
            break
        target = target * max((voxels / max_voxels) ** (1 / 3), 1.01)  # uniform: keeps H == W
    scale = target / native_spacing
    offset = (native_shape - 1) / 2 - (shape - 1) / 2 * scale
    return tuple(int(n) for n in shape), tuple(float(s) for s in scale), tuple(float(o) for o in offset), target


def _mm(spacing) -> str:
    return "×".join(f"{float(s):.3g}" for s in spacing)


def _resample(array: np.ndarray, scale, offset, shape, *, antialias: bool) -> np.ndarray:
    """Separable linear resampling of ``(C, *in)`` to ``(C, *shape)``: output ``j`` ← input ``scale·j + offset``.

    Coordinates beyond the input's edge voxels take the edge value. With ``antialias`` an axis shrunk by a
    factor ``f > 1`` is first blurred with a Gaussian of σ = (f − 1)/2 input voxels (as scikit-image does) so a
    thin bright vessel dims instead of vanishing between samples.
    """
    array = np.asarray(array, dtype=np.float32)
    for axis in np.argsort(np.divide(shape, array.shape[1:])):  # shrink first: later passes move less data
        n, a = array.shape[axis + 1], scale[axis]
        if a == 1.0 and offset[axis] == 0.0 and shape[axis] == n:
            continue  # the native grid along this axis (spacing_tolerance): interpolation would copy it
        if antialias and a > 1.0:
            array = ndimage.gaussian_filter1d(array, (a - 1.0) / 2.0, axis=axis + 1, mode="nearest")
        x = np.clip(a * np.arange(shape[axis]) + offset[axis], 0.0, n - 1.0)
        low = np.minimum(np.floor(x).astype(np.int64), max(n - 2, 0))
        weight = (x - low).astype(np.float32).reshape([-1 if d == axis + 1 else 1 for d in range(4)])
        array = np.take(array, low, axis=axis + 1) * (1 - weight) + np.take(
            array, np.minimum(low + 1, n - 1), axis=axis + 1) * weight
    return array


def _n4(image: np.ndarray, mask: np.ndarray, spacing) -> np.ndarray:
    """N4 bias-field correction of each channel of ``(C, D, H, W)``, fitted on a ≤ 48-per-axis shrunk copy."""
    import SimpleITK as sitk

    out = np.empty_like(image)
    shrink = [max(1, math.ceil(n / 48)) for n in image.shape[1:]][::-1]  # SimpleITK order is (W, H, D)
    mask_image = sitk.GetImageFromArray((mask if mask.any() else np.ones_like(mask)).astype(np.uint8))
    for c, channel in enumerate(image):
        positive = channel - channel.min() + 1e-3 * max(float(np.ptp(channel)), 1e-6)  # N4 works on log(x)
        itk = sitk.GetImageFromArray(positive.astype(np.float32))
        for im in (itk, mask_image):
            im.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([25, 25, 25])
        corrector.Execute(sitk.Shrink(itk, shrink), sitk.Shrink(mask_image, shrink))
        log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(itk))
        out[c] = positive / np.exp(log_bias)
    return out


def _normalize(image: np.ndarray, mask: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Per-channel normalisation with statistics over body voxels (all voxels if the mask is empty)."""
    out = np.empty_like(image)
    for c, channel in enumerate(image):
        values = channel[mask] if mask.any() else channel.ravel()
        if config.normalization == "percentile":
            low, high = np.percentile(values, config.percentiles)
            out[c] = np.clip((channel - low) / max(high - low, 1e-12), 0.0, 1.0)
        else:
            out[c] = (channel - values.mean()) / max(float(values.std()), 1e-12)
    return out


def _stack_channels(image: Volume | Sequence[Volume]) -> tuple[np.ndarray, np.ndarray, str]:
    """One ``(X, Y, Z, C)`` float32 array from a Volume or one Volume per channel on the same grid."""
    volumes = [image] if isinstance(image, Volume) else list(image)
    if not volumes:
        raise InputError("preprocess_image needs at least one Volume; got an empty sequence")
    first = volumes[0]
    name = str(first.path) if first.path else "image"
    for other in volumes[1:]:
        mismatch = grid_mismatch(Path(str(other.path or "channel")), other.shape, other.affine, Path(name),
                                 first.shape, first.affine, "resample all channels onto one grid first")
        if mismatch:
            raise InputError(mismatch[0])
    arrays = [v.array if v.array.ndim == 4 else v.array[..., None] for v in volumes]
    if any(a.ndim != 4 for a in arrays):
        raise InputError(f"{name}: image must be (X, Y, Z) or (X, Y, Z, C); got shape {first.array.shape}")
    stacked = np.concatenate(arrays, axis=-1).astype(np.float32, copy=False)
    if not np.isfinite(stacked).all():
        log.warning("%s: replacing non-finite voxels with the channel minimum", name)
        stacked = stacked.copy()
        for c in range(stacked.shape[-1]):
            channel = stacked[..., c]
            channel[~np.isfinite(channel)] = np.min(channel[np.isfinite(channel)], initial=0.0)
    return stacked, first.affine, name


def preprocess_image(image: Volume | Sequence[Volume], config: PreprocessConfig):
    """A volume from a file → the model's input tensor.

    Steps: canonical orientation ``(D, H, W)`` → crop to the body box (+5 mm) → linear resampling to the
    target spacing (none when the native spacing is within ``spacing_tolerance`` of it), coarsened uniformly if needed so that ``D·H·W ≤ max_voxels`` → optional N4 → per-image,
    per-channel normalisation → padding at the end of each axis to ≥ 8 voxels with the channel minimum.

    Args:
        image: a :class:`~vol25d.io.Volume` ``(X, Y, Z)`` or ``(X, Y, Z, C)``, or one Volume per channel
            (``case_0000``, ``case_0001`` …) on the same grid.
        config: the :class:`PreprocessConfig`.

    Returns:
        ``(tensor, info)``: float32 ``(C, D, H, W)`` and the :class:`RestoreInfo` for :func:`restore` and
        :func:`preprocess_label`.
    """
    array, affine, name = _stack_channels(image)
    if config.intensity_stats and len(config.intensity_stats) != array.shape[-1]:
        raise InputError(f"{name}: has {array.shape[-1]} channel(s) but the preprocessing was planned for "
                         f"{len(config.intensity_stats)}; pass every channel of the case")
    canonical, spacing, frame = to_canonical(array, affine, config.rotation_axis)
    if config.crop_foreground:
        start, stop = _body_box(canonical, spacing)
    else:
        start, stop = (0, 0, 0), frame.shape_dhw
    cropped = canonical[:, start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]]
    target = config.target_spacing_mm or (spacing[0], min(spacing[1:]), min(spacing[1:]))
    if _close_to(spacing, target, config.spacing_tolerance):
        target = tuple(spacing)
    wanted = np.asarray(target, dtype=np.float64)
    shape, scale, offset, target = _grid(cropped.shape[1:], spacing, target, config.max_voxels)
    if not np.allclose(target, wanted):
        log.info("%s: more than max_voxels = %d voxels at %s mm; coarsened to %s mm (%s voxels)", name,
                 config.max_voxels, _mm(wanted), _mm(target), "×".join(map(str, shape)))
    resampled = _resample(cropped, scale, offset, shape, antialias=True)
    mask = _body_mask(resampled)
    if config.n4:
        resampled = _n4(resampled, mask, target)
    normalized = _normalize(resampled, mask, config)
    padded_shape = tuple(max(n, MIN_SIZE) for n in shape)
    pad = [(0, 0)] + [(0, p - n) for n, p in zip(shape, padded_shape)]
    if any(after for _, after in pad):
        normalized = np.stack([np.pad(c, pad[1:], constant_values=c.min()) for c in normalized])
    info = RestoreInfo(frame, tuple(start), tuple(stop), scale, offset, shape, padded_shape,
                       tuple(float(t) for t in target))
    return torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32)), info


def preprocess_label(label: Volume, info: RestoreInfo, num_classes: int, multi_label: bool = False) -> torch.Tensor:
    """A label map → one binary channel per foreground class on the grid of its preprocessed image.

    Args:
        label: ``(X, Y, Z)`` integer map with values ``0 … num_classes`` (0 = background), or with
            ``multi_label`` an ``(X, Y, Z, num_classes)`` 0/1 map (overlapping classes); same grid as the image.
        info: the image's :class:`RestoreInfo`.
        num_classes: the number ``K`` of foreground classes (background not counted).
        multi_label: whether ``label`` is the 4-D one-channel-per-class form.

    Returns:
        uint8 tensor ``(K, D, H, W)`` (``info.padded_shape``): each class resampled linearly and thresholded
        at 0.5, zero in the padding.
    """
    name = str(label.path) if label.path else "label"
    mismatch = grid_mismatch(Path(name), label.shape, label.affine, Path("the image"), info.frame.shape,
                             info.frame.affine, "the label must be on the image's voxel grid")
    if mismatch:
        raise InputError(mismatch[0])
    array = np.asarray(label.array)
    if multi_label and array.ndim == 3 and num_classes == 1:
        array = array[..., None]
    expected = 4 if multi_label else 3
    if array.ndim != expected or (multi_label and array.shape[3] != num_classes):
        raise InputError(f"{name}: shape {array.shape} does not fit num_classes={num_classes}, "
                         f"multi_label={multi_label}; expected {'(X, Y, Z, K)' if multi_label else '(X, Y, Z)'}")
    highest = 1 if multi_label else num_classes
    # min/max (not np.unique) keeps a 512² × 256 label check fast; floats must also be whole numbers.
    bad = array.min() < 0 or array.max() > highest
    if bad or not np.issubdtype(array.dtype, np.integer) and not np.array_equal(array, np.rint(array)):
        values = np.unique(array[(array < 0) | (array > highest) | (array != np.rint(array))])
        raise InputError(f"{name}: holds values {values[:10].tolist()} outside 0…{highest}; check num_classes / "
                         "multi_label in dataset.json")
    (s0, s1, s2), (e0, e1, e2) = info.crop_start, info.crop_stop
    out = np.zeros((num_classes, *info.padded_shape), dtype=np.uint8)
    d, h, w = info.resampled_shape
    for k in range(num_classes):  # one class at a time: a 512² × 256 one-hot of many classes is large
        binary = array[..., k] if multi_label else array == k + 1
        canonical = to_canonical(binary.astype(np.float32), info.frame.affine, info.frame.rotation_axis)[0]
        cropped = canonical[None, s0:e0, s1:e1, s2:e2]
        sampled = _resample(cropped, info.scale, info.offset, info.resampled_shape, antialias=False)[0]
        out[k, :d, :h, :w] = sampled >= 0.5
    return torch.from_numpy(out)


def restore(prob, info: RestoreInfo) -> Volume:
    """Model output on the preprocessed grid → a volume on the input file's grid.

    Args:
        prob: ``(K, D, H, W)`` tensor or array on ``info.padded_shape`` (probabilities, or any per-class map).
        info: from :func:`preprocess_image`.

    Returns:
        A :class:`~vol25d.io.Volume` with the input's affine: float32 ``(X, Y, Z, K)`` in the input's own voxel
        order and shape, linear interpolation back to native spacing, 0 outside the body crop.
    """
    if hasattr(prob, "detach"):
        prob = prob.detach().float().cpu().numpy()
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 4 or tuple(prob.shape[1:]) != info.padded_shape:
        raise InputError(f"prediction must be (K, D, H, W) with (D, H, W) = {info.padded_shape}; got {prob.shape}")
    d, h, w = info.resampled_shape
    crop_shape = tuple(b - a for a, b in zip(info.crop_start, info.crop_stop))
    scale = tuple(1.0 / a for a in info.scale)
    offset = tuple(-b / a for a, b in zip(info.scale, info.offset))
    native = np.zeros((prob.shape[0], *info.frame.shape_dhw), dtype=np.float32)
    (s0, s1, s2), (e0, e1, e2) = info.crop_start, info.crop_stop
    native[:, s0:e0, s1:e1, s2:e2] = _resample(prob[:, :d, :h, :w], scale, offset, crop_shape, antialias=False)
    out = from_canonical(native, info.frame)
    array = np.ascontiguousarray(out if out.ndim == 4 else out[..., None], dtype=np.float32)
    return Volume(array, info.frame.affine)

"""The one mapping between a file's voxel order ``(X, Y, Z)`` and the model's ``(D, H, W)``, and its inverse.

docs/design.md, "Geometry conventions": the array is first reoriented to RAS+ (the closest canonical orientation:
axis permutations and flips only, never interpolation — an oblique image stays oblique, its affine carries
the obliquity), then its axes are ordered so that ``D`` is the rotation axis:

===============  =======  =======  =======
rotation_axis    D        H        W
===============  =======  =======  =======
``"SI"``         S (Z)    A (Y)    R (X)
``"AP"``         A (Y)    S (Z)    R (X)
``"LR"``         R (X)    S (Z)    A (Y)
===============  =======  =======  =======

``H`` and ``W`` are the two remaining RAS axes in descending order (so ``"SI"`` gives the docs/design.md default
``(D, H, W) = (Z, Y, X)``). Every index increases towards R, A or S. MONAI and nnU-Net keep ``(X, Y, Z)``;
everything in ``vol25d`` after this module works in ``(D, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations

from vol25d.errors import InputError
from vol25d.settings import ROTATION_AXES

__all__ = ["ROTATION_AXES", "CanonicalFrame", "canonical_frame", "to_canonical", "from_canonical"]

_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class CanonicalFrame:
    """What :func:`from_canonical` needs to undo :func:`to_canonical`, and the canonical grid's geometry.

    Attributes:
        shape: the original spatial shape ``(X, Y, Z)``.
        affine: the original ``(4, 4)`` voxel → RAS+ affine.
        ornt: ``(3, 2)`` nibabel orientation of the original axes (``io_orientation(affine)``).
        rotation_axis: ``"SI"``, ``"AP"`` or ``"LR"``.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    ornt: np.ndarray
    rotation_axis: str

    @property
    def ras_affine(self) -> np.ndarray:
        """``(4, 4)`` affine of the RAS-reoriented array (still ``(X, Y, Z)`` order): close to positive diagonal."""
        return self.affine @ orientations.inv_ornt_aff(self.ornt, self.shape)

    @property
    def axes(self) -> tuple[int, int, int]:
        """The RAS axes that become ``(D, H, W)``."""
        return ROTATION_AXES[self.rotation_axis]

    @property
    def shape_dhw(self) -> tuple[int, int, int]:
        """The canonical spatial shape ``(D, H, W)``."""
        ras_shape = [0, 0, 0]
        for axis, (target, _) in enumerate(self.ornt):
            ras_shape[int(target)] = self.shape[axis]
        return tuple(ras_shape[a] for a in self.axes)

    @property
    def affine_dhw(self) -> np.ndarray:
        """``(4, 4)`` affine taking a canonical voxel index ``(d, h, w, 1)`` to RAS+ world mm."""
        permute = np.zeros((4, 4))
        for column, ras_axis in enumerate(self.axes):
            permute[ras_axis, column] = 1.0
        permute[3, 3] = 1.0
        return self.ras_affine @ permute

    @property
    def spacing_dhw(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(D, H, W)``."""
        return tuple(float(s) for s in np.linalg.norm(self.affine_dhw[:3, :3], axis=0))


def canonical_frame(affine: np.ndarray, shape, rotation_axis: str = "SI") -> CanonicalFrame:
    """The :class:`CanonicalFrame` of an image from its affine and spatial shape alone (no array needed).

    Use it to get canonical spacings and shapes (``frame.spacing_dhw``, ``frame.shape_dhw``) for planning
    without loading the voxels.

    Args:
        affine: ``(4, 4)`` voxel → RAS+ affine of the ``(X, Y, Z)`` array.
        shape: the spatial shape ``(X, Y, Z)`` (extra trailing entries, e.g. channels, are ignored).
        rotation_axis: ``"SI"``, ``"AP"`` or ``"LR"``.
    """
    if rotation_axis not in ROTATION_AXES:
        raise InputError(f"rotation_axis must be one of {sorted(ROTATION_AXES)}; got {rotation_axis!r}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"affine must be a finite invertible 4×4 matrix; got {affine.tolist()}")
    ornt = orientations.io_orientation(affine)
    return CanonicalFrame(tuple(int(n) for n in shape[:3]), affine, ornt, rotation_axis)


def to_canonical(array: np.ndarray, affine: np.ndarray, rotation_axis: str = "SI"):
    """Reorient an ``(X, Y, Z[, C])`` array to RAS+ and order it ``(D, H, W)`` (see the module table).

    A view of the input where NumPy allows (no copy, no interpolation): values are only permuted and flipped.

    Args:
        array: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` in the file's voxel order.
        affine: ``(4, 4)`` voxel → RAS+ affine of ``array``.
        rotation_axis: ``"SI"`` (default), ``"AP"`` or ``"LR"``: the anatomical axis that becomes ``D``.

    Returns:
        ``(array_dhw, spacing_dhw, frame)``: the array as ``(D, H, W)`` for a 3-D input or channels first
        ``(C, D, H, W)`` for a 4-D input; the voxel size in mm along ``(D, H, W)``; the
        :class:`CanonicalFrame` that :func:`from_canonical` inverts with.

    Example:
        >>> x = np.zeros((4, 5, 6)); a = np.diag([-1.0, -1.0, 2.0, 1.0])   # an LPS-flipped (X, Y, Z) image
        >>> y, spacing, frame = to_canonical(x, a)
        >>> y.shape, spacing
        ((6, 5, 4), (2.0, 1.0, 1.0))
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise InputError(f"array must be (X, Y, Z) or (X, Y, Z, C); got shape {array.shape}")
    frame = canonical_frame(affine, array.shape, rotation_axis)
    ras = orientations.apply_orientation(array, frame.ornt)
    d, h, w = frame.axes
    out = np.transpose(ras, (3, d, h, w) if array.ndim == 4 else (d, h, w))
    return out, frame.spacing_dhw, frame


def from_canonical(array_dhw, frame: CanonicalFrame) -> np.ndarray:
    """Exact inverse of :func:`to_canonical`: back to the original voxel order.

    Args:
        array_dhw: ``(D, H, W)`` or channels first ``(K, D, H, W)`` (NumPy array or CPU torch tensor) on the
            canonical grid of ``frame``; ``K`` need not equal the input's channel count (e.g. class
            probabilities of a one-channel image).
        frame: from :func:`to_canonical` or :func:`canonical_frame`.

    Returns:
        ``(X, Y, Z)`` for a 3-D input, ``(X, Y, Z, K)`` for a 4-D one, in the original file's voxel order, so
        it can be written with ``frame.affine``.
    """
    if hasattr(array_dhw, "detach"):  # a torch tensor; this module imports no torch
        array_dhw = array_dhw.detach().cpu().numpy()
    array_dhw = np.asarray(array_dhw)
    if array_dhw.ndim not in (3, 4) or tuple(array_dhw.shape[-3:]) != frame.shape_dhw:
        raise InputError(
            f"array must be (D, H, W) or (K, D, H, W) with (D, H, W) = {frame.shape_dhw}; got shape "
            f"{array_dhw.shape}"
        )
    d, h, w = frame.axes
    ras_order = np.argsort([d, h, w])  # position of R, A, S among (D, H, W)
    if array_dhw.ndim == 4:
        ras = np.transpose(array_dhw, (*(1 + ras_order), 0))
    else:
        ras = np.transpose(array_dhw, ras_order)
    back = orientations.ornt_transform(_IDENTITY_ORNT, frame.ornt)
    return orientations.apply_orientation(ras, back)

"""Projection geometry: directions, detector size and the voxel ↔ detector coordinate maps.

Pure functions on numbers and tensors; they hold the conventions of docs/design.md ("Geometry conventions")
that every operator uses. In the ``(h, w)`` plane of a volume ``(D, H, W)`` the centre is
``c = ((H - 1) / 2, (W - 1) / 2)``; at angle ``θ`` the ray direction is ``r = (sin θ, cos θ)`` and the
detector direction ``e = (cos θ, -sin θ)``. Detector bin ``i`` of ``S`` sits at ``s_i = i - (S - 1) / 2``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "default_detector",
    "equal_angles",
    "random_directions",
    "detector_centres",
    "voxel_detector_coords",
    "ray_samples",
]


def default_detector(height: int, width: int) -> int:
    """The default number of detector bins ``S`` for a ``(H, W)`` plane.

    The smallest integer ``≥ √(H² + W²)`` with the parity of ``H``, so that every row of voxels lands on a
    bin centre at ``θ = 0`` and no voxel falls off the detector at any angle.

    Example:
        >>> default_detector(64, 64)
        92
    """
    if height < 1 or width < 1:
        raise ValueError(f"plane size must be positive; got (H, W) = ({height}, {width})")
    size = math.ceil(math.sqrt(height * height + width * width) - 1e-9)
    if size % 2 != height % 2:
        size += 1
    return size


def equal_angles(count: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``count`` equally spaced directions in ``[0, π)``: ``θ_k = k π / count``. Returns shape ``(count,)``."""
    if count < 1:
        raise ValueError(f"number of directions must be ≥ 1; got {count}")
    return torch.arange(count, dtype=torch.float64, device=device).mul(math.pi / count).to(dtype)


def random_directions(directions: int, views: int, generator: torch.Generator) -> torch.Tensor:
    """``views`` (``p``) of the ``directions`` (``m``) equal angles, drawn without replacement from
    ``generator`` and sorted: the directions of one path-1 training step. Returns ``(p,)`` float32."""
    if not 1 <= views <= directions:
        raise ValueError(f"views (p = {views}) must be between 1 and directions (m = {directions})")
    chosen = torch.randperm(directions, generator=generator)[:views]
    return equal_angles(directions)[chosen.sort().values]


def detector_centres(detector: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Bin centres ``s_i = i - (S - 1) / 2``, shape ``(S,)``."""
    return torch.arange(detector, dtype=dtype, device=device) - (detector - 1) / 2


def voxel_detector_coords(angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where each voxel of the plane falls on the detector: ``s_θ(h, w) = ⟨(h, w) - c, e(θ)⟩``.

    Args:
        angles: ``(p,)`` radians.
        height, width: the plane size ``(H, W)``.

    Returns:
        ``(p, H, W)`` detector coordinates (same dtype and device as ``angles``).
    """
    h = torch.arange(height, dtype=angles.dtype, device=angles.device) - (height - 1) / 2
    w = torch.arange(width, dtype=angles.dtype, device=angles.device) - (width - 1) / 2
    cos = torch.cos(angles)[:, None, None]
    sin = torch.sin(angles)[:, None, None]
    return h[None, :, None] * cos - w[None, None, :] * sin


def ray_samples(angles: torch.Tensor, height: int, width: int, detector: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample positions of the ray-driven MIP: ``c + s_i e(θ) + t_j r(θ)`` in ``(h, w)`` voxel coordinates.

    The samples ``t_j = j - (W - 1) / 2`` (``j`` an integer) are taken along every ray for
    ``|t| ≤ (diag + 1) / 2`` so that every ray crosses the whole plane; the caller ignores the samples that
    fall outside the volume.

    Args:
        angles: ``(p,)`` radians.
        height, width: the plane size ``(H, W)``.
        detector: the number of bins ``S``.

    Returns:
        ``(h, w)``: two tensors of shape ``(p, S, T)``.
    """
    half_diag = 0.5 * math.sqrt(height * height + width * width) + 1.0
    offset = (width - 1) / 2
    j_lo = math.floor(offset - half_diag)
    j_hi = math.ceil(offset + half_diag)
    t = torch.arange(j_lo, j_hi + 1, dtype=angles.dtype, device=angles.device) - offset
    s = detector_centres(detector, dtype=angles.dtype, device=angles.device)
    cos = torch.cos(angles)[:, None, None]
    sin = torch.sin(angles)[:, None, None]
    ch, cw = (height - 1) / 2, (width - 1) / 2
    h = ch + s[None, :, None] * cos + t[None, None, :] * sin
    w = cw - s[None, :, None] * sin + t[None, None, :] * cos
    return h, w

"""Argument checks shared by the public operators (the boundary: inside, nothing re-checks)."""

from __future__ import annotations

import torch

from vol25d.geometry import default_detector


def _check_5d(tensor: torch.Tensor, name: str, layout: str) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 5:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{name} must be a 5-D tensor {layout}; got {shape}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {tensor.dtype}")


def check_volume(volume: torch.Tensor) -> None:
    _check_5d(volume, "volume", "(B, C, D, H, W)")


def check_views(views: torch.Tensor) -> None:
    _check_5d(views, "views", "(B, C, p, D, S)")


def check_projection(volume: torch.Tensor, angles: torch.Tensor, detector: int | None) -> int:
    """Check a projection's arguments (:func:`~vol25d.ops.mip`, :func:`~vol25d.ops.project`); returns the
    detector size, :func:`~vol25d.geometry.default_detector` of ``(H, W)`` when ``detector`` is ``None``."""
    check_volume(volume)
    check_angles(angles)
    if detector is None:
        detector = default_detector(volume.shape[-2], volume.shape[-1])
    check_detector(detector)
    return detector


def check_angles(angles: torch.Tensor, count: int | None = None) -> None:
    if not isinstance(angles, torch.Tensor) or angles.dim() != 1 or angles.numel() == 0:
        shape = tuple(angles.shape) if isinstance(angles, torch.Tensor) else type(angles).__name__
        raise ValueError(f"angles must be a non-empty 1-D tensor of radians; got {shape}")
    if not angles.is_floating_point():
        raise ValueError(f"angles must be floating-point radians; got dtype {angles.dtype}")
    if count is not None and angles.numel() != count:
        raise ValueError(f"angles must have one entry per view ({count}); got {angles.numel()}")


def check_detector(detector: int) -> None:
    if isinstance(detector, bool) or not isinstance(detector, int) or detector < 1:
        raise ValueError(f"detector must be an integer ≥ 1; got {detector!r}")


def check_shape(shape) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be the plane size (H, W); got {shape!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive (H, W); got {tuple(shape)}")
    return height, width

"""Argument checks shared by the public operators (the boundary: inside, nothing re-checks)."""

from __future__ import annotations

import torch


def check_volume(volume: torch.Tensor) -> None:
    if not isinstance(volume, torch.Tensor) or volume.dim() != 5:
        shape = tuple(volume.shape) if isinstance(volume, torch.Tensor) else type(volume).__name__
        raise ValueError(f"volume must be a 5-D tensor (B, C, D, H, W); got {shape}")
    if not volume.is_floating_point():
        raise ValueError(f"volume must be a floating-point tensor; got dtype {volume.dtype}")


def check_views(views: torch.Tensor) -> None:
    if not isinstance(views, torch.Tensor) or views.dim() != 5:
        shape = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views).__name__
        raise ValueError(f"views must be a 5-D tensor (B, C, p, D, S); got {shape}")
    if not views.is_floating_point():
        raise ValueError(f"views must be a floating-point tensor; got dtype {views.dtype}")


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

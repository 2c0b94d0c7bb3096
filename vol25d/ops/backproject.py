"""Linear back-projection, the exact transpose of :func:`~vol25d.ops.project`."""

from __future__ import annotations

import torch

from vol25d.ops._validate import check_angles, check_shape, check_views
from vol25d.ops.backend import kernels_for


class _Backproject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, views, angles, height, width):
        batch, channels, count, depth, detector = views.shape
        ctx.save_for_backward(angles)
        ctx.detector = detector
        volume = kernels_for(views).backproject(views.reshape(-1, count, depth, detector), angles, height, width)
        return volume.reshape(batch, channels, depth, height, width)

    @staticmethod
    def backward(ctx, grad_volume):
        from vol25d.ops.project import project

        (angles,) = ctx.saved_tensors
        grad = project(grad_volume, angles, ctx.detector) if ctx.needs_input_grad[0] else None
        return grad, None, None, None


def backproject(views: torch.Tensor, angles: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Back-project views into a volume: every voxel gathers, from every view, the linear interpolation of
    that view at the voxel's detector position, summed over views (no ``1/p``).

    ``backproject(v)[d, h, w] = Σ_k Σ_i v[k, d, i] Λ(s_θk(h, w) - s_i)``, the exact transpose of
    :func:`~vol25d.ops.project`, which is also its autograd backward.

    Args:
        views: ``(B, C, p, D, S)`` float tensor.
        angles: ``(p,)`` directions in radians, one per view.
        shape: the plane size ``(H, W)`` of the volume to rebuild; ``D`` comes from the views.

    Returns:
        Volume ``(B, C, D, H, W)``.

    Example:
        >>> v = torch.ones(1, 1, 2, 3, 12)
        >>> backproject(v, torch.tensor([0.0, 1.0]), (8, 8)).shape
        torch.Size([1, 1, 3, 8, 8])
    """
    check_views(views)
    check_angles(angles, views.shape[2])
    height, width = check_shape(shape)
    return _Backproject.apply(views, angles.to(views.device), height, width)

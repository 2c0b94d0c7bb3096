"""Sum projection (the discrete Radon transform about the ``D`` axis), voxel-driven."""

from __future__ import annotations

import torch

from vol25d.ops._validate import check_projection
from vol25d.ops.backend import kernels_for


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, angles, detector):
        batch, channels, depth, height, width = volume.shape
        ctx.save_for_backward(angles)
        ctx.plane = (height, width)
        views = kernels_for(volume).project(volume.reshape(-1, depth, height, width), angles, detector)
        return views.reshape(batch, channels, *views.shape[1:])

    @staticmethod
    def backward(ctx, grad_views):
        from vol25d.ops.backproject import backproject

        (angles,) = ctx.saved_tensors
        grad = backproject(grad_views, angles, ctx.plane) if ctx.needs_input_grad[0] else None
        return grad, None, None


def project(volume: torch.Tensor, angles: torch.Tensor, detector: int | None = None) -> torch.Tensor:
    """Sum projection of a volume along rays in the ``(H, W)`` plane, one view per angle.

    Voxel ``(h, w)`` falls on the detector at ``s_θ(h, w) = ⟨(h, w) - c, e(θ)⟩`` and is shared between the
    two nearest bins by linear interpolation: ``project(x)[k, d, i] = Σ_{h,w} x[d, h, w] Λ(s_θk(h, w) - s_i)``.
    At ``θ = 0`` with ``detector = H`` this is ``x.sum(-1)``. Its adjoint, and autograd backward, is
    :func:`~vol25d.ops.backproject`.

    Args:
        volume: ``(B, C, D, H, W)`` float tensor.
        angles: ``(p,)`` directions in radians.
        detector: number of bins ``S``; default :func:`~vol25d.geometry.default_detector` of ``(H, W)``.

    Returns:
        Views ``(B, C, p, D, S)``.

    Example:
        >>> x = torch.rand(1, 1, 4, 8, 8)
        >>> project(x, torch.tensor([0.0]), detector=8)[0, 0, 0].allclose(x[0, 0].sum(-1))
        True
    """
    detector = check_projection(volume, angles, detector)
    return _Project.apply(volume, angles.to(volume.device), detector)

"""Maximum intensity projection, ray-driven with bilinear sampling."""

from __future__ import annotations

import torch

from vol25d.ops._validate import check_projection
from vol25d.ops.backend import kernels_for


class _MIP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, volume, angles, detector):
        batch, channels, depth, height, width = volume.shape
        kernels = kernels_for(volume)
        # Only a volume that needs a gradient pays for the argmax; training's input never does.
        keep = ctx.needs_input_grad[0]
        flat = volume.reshape(-1, depth, height, width)
        views, argmax = kernels.mip(flat, angles, detector, keep)
        if keep:
            # A ray that meets no sample holds the volume's minimum: its gradient goes to that voxel.
            argmin = flat.reshape(flat.shape[0], -1).argmin(dim=1)
            ctx.save_for_backward(argmax, argmin, angles)
            ctx.plane = (height, width)
            ctx.kernels = kernels
        return views.reshape(batch, channels, *views.shape[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_views):
        argmax, argmin, angles = ctx.saved_tensors
        batch, channels, count, depth, detector = grad_views.shape
        grad_views = grad_views.reshape(-1, count, depth, detector).contiguous()
        grad = ctx.kernels.mip_backward(grad_views, argmax, angles, *ctx.plane)
        missed = (grad_views * (argmax < 0)).reshape(grad_views.shape[0], -1).sum(dim=1, keepdim=True)
        grad.reshape(grad.shape[0], -1).scatter_add_(1, argmin[:, None], missed.to(grad.dtype))
        return grad.reshape(batch, channels, depth, *ctx.plane), None, None


def mip(volume: torch.Tensor, angles: torch.Tensor, detector: int | None = None) -> torch.Tensor:
    """Maximum intensity projection along rays in the ``(H, W)`` plane, one view per angle.

    ``mip(x)[d, i] = max_j x̃(d, c + s_i e + t_j r)`` with ``x̃`` bilinear in ``(h, w)`` and samples one voxel
    apart along the ray; samples outside the volume are ignored (never zero-padded), and a ray that meets
    none gives the volume's minimum. At ``θ = 0`` with ``detector = H`` this is ``x.amax(-1)``. The gradient
    goes to the winning samples through their bilinear weights; the argmax is kept only when ``volume``
    requires a gradient.

    Args:
        volume: ``(B, C, D, H, W)`` float tensor.
        angles: ``(p,)`` directions in radians.
        detector: number of bins ``S``; default :func:`~vol25d.geometry.default_detector` of ``(H, W)``.

    Returns:
        Views ``(B, C, p, D, S)``.

    Example:
        >>> x = torch.rand(1, 1, 4, 8, 8)
        >>> mip(x, torch.tensor([0.0]), detector=8)[0, 0, 0].allclose(x[0, 0].amax(-1))
        True
    """
    detector = check_projection(volume, angles, detector)
    return _MIP.apply(volume, angles.to(volume.device), detector)

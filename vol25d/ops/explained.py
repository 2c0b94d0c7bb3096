"""The explained back-projection: each view's probability goes to the voxels that explain the view's MIP.

A MIP pixel shows the brightest voxel along its ray, so a view's "object on this ray" belongs to the voxels
whose own intensity is close to that ray's maximum, not to the whole ray (which is what rebuilds the visual
hull). Per view ``k`` each voxel's back-projected probability is weighed by

    ``w_k = σ((x - V̂_k + margin) / s) / σ(margin / s)``

where ``x`` is the voxel's (normalised) intensity, ``V̂_k`` the image's own MIP at the view's angle (U's
input) linearly interpolated at the voxel's detector position, and ``margin``, ``s`` learnable per class:
``w_k = 1`` for a voxel as bright as its ray's maximum, towards 0 for a voxel much darker.
"""

from __future__ import annotations

import torch

from vol25d.ops._validate import check_angles, check_views, check_volume
from vol25d.ops.backend import kernels_for


def explained_weight(gap: torch.Tensor, margin: torch.Tensor, softness: torch.Tensor) -> torch.Tensor:
    """``σ((margin - gap) / s) / σ(margin / s)`` with ``gap = V̂ - x`` (broadcasting)."""
    return torch.sigmoid((margin - gap) / softness) / torch.sigmoid(margin / softness)


class _BackprojectExplained(torch.autograd.Function):
    @staticmethod
    def forward(ctx, views, image_views, image, angles, margin, softness):
        batch, classes, count, depth, detector = views.shape
        height, width = image.shape[-2:]
        kernels = kernels_for(views)
        volume = kernels.backproject_explained(
            views.reshape(-1, count, depth, detector), image_views.reshape(-1, count, depth, detector),
            image.reshape(-1, depth, height, width), angles, margin, softness, height, width,
        )  # fmt: skip
        ctx.save_for_backward(views, image_views, image, angles, margin, softness)
        ctx.kernels = kernels
        return volume.reshape(batch, classes, depth, height, width)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_volume):
        # One view at a time: the scratch is a few volumes, never one per view. Everything the weights need
        # (V̂_k, and P̂_k for the parameters' gradients) is rebuilt from the saved views.
        views, image_views, image, angles, margin, softness = ctx.saved_tensors
        kernels = ctx.kernels
        batch, classes, count, depth, detector = views.shape
        height, width = image.shape[-2:]
        if hasattr(kernels, "backproject_explained_backward"):  # the CPU kernels: the same sums, fused
            grad_views, grad_margin, grad_softness = kernels.backproject_explained_backward(
                grad_volume.reshape(-1, depth, height, width), views.reshape(-1, count, depth, detector),
                image_views.reshape(-1, count, depth, detector), image.reshape(-1, depth, height, width), angles,
                margin, softness, ctx.needs_input_grad[0], ctx.needs_input_grad[4] or ctx.needs_input_grad[5])
            return (grad_views.reshape(views.shape).to(views.dtype) if ctx.needs_input_grad[0] else None, None, None,
                    None, grad_margin.to(margin.dtype) if ctx.needs_input_grad[4] else None,
                    grad_softness.to(softness.dtype) if ctx.needs_input_grad[5] else None)
        dtype = torch.float64 if views.dtype == torch.float64 else torch.float32
        grad_volume = grad_volume.contiguous().to(dtype)
        x = image.to(dtype)  # (B, 1, D, H, W)
        m = margin.to(dtype).view(1, -1, 1, 1, 1)
        s = softness.to(dtype).view(1, -1, 1, 1, 1)
        a = m / s
        sa = torch.sigmoid(a)
        want_views, want_margin, want_softness = ctx.needs_input_grad[0], ctx.needs_input_grad[4], ctx.needs_input_grad[5]
        grad_views = torch.empty_like(views) if want_views else None
        grad_margin = torch.zeros(classes, dtype=dtype, device=views.device)
        grad_softness = torch.zeros_like(grad_margin)
        for k in range(count):
            one = angles[k : k + 1]
            v_hat = kernels.backproject(image_views[:, :, k : k + 1].reshape(-1, 1, depth, detector).to(dtype),
                                        one, height, width).reshape(batch, 1, depth, height, width)
            z = (x - v_hat + m) / s
            sz = torch.sigmoid(z)
            weight = sz / sa  # (B, K, D, H, W)
            if want_views:
                grad_views[:, :, k] = kernels.project((grad_volume * weight).reshape(-1, depth, height, width), one,
                                                      detector).reshape(batch, classes, depth, detector).to(views.dtype)
            if want_margin or want_softness:
                p_hat = kernels.backproject(views[:, :, k : k + 1].reshape(-1, 1, depth, detector).to(dtype), one,
                                            height, width).reshape(batch, classes, depth, height, width)
                common = grad_volume * p_hat * weight / s
                if want_margin:
                    grad_margin += (common * (sa - sz)).sum(dim=(0, 2, 3, 4))
                if want_softness:
                    grad_softness += (common * (a * (1 - sa) - z * (1 - sz))).sum(dim=(0, 2, 3, 4))
        return (grad_views, None, None, None, grad_margin.to(margin.dtype) if want_margin else None,
                grad_softness.to(softness.dtype) if want_softness else None)


def backproject_explained(
    views: torch.Tensor,
    image_views: torch.Tensor,
    image: torch.Tensor,
    angles: torch.Tensor,
    margin: torch.Tensor,
    softness: torch.Tensor,
) -> torch.Tensor:
    """Back-project view probabilities, each view's weighed per voxel by how well the voxel explains that
    view's MIP: ``out[d, h, w] = Σ_k P̂_k · σ((x - V̂_k + margin) / s) / σ(margin / s)`` (summed over views,
    no ``1/p``), with ``P̂_k``, ``V̂_k`` the views linearly interpolated at the voxel's detector position as
    in :func:`~vol25d.ops.backproject`.

    Differentiable in ``views``, ``margin`` and ``softness``; ``image`` and ``image_views`` are inputs that
    never need a gradient. Memory: the output plus, in the backward, a few volumes of scratch (one view at
    a time).

    Args:
        views: ``(B, K, p, D, S)`` probabilities (or any per-view values) to back-project.
        image_views: ``(B, 1, p, D, S)`` the image's MIP at the same angles (:func:`~vol25d.ops.mip`).
        image: ``(B, 1, D, H, W)`` the image those MIPs were taken of.
        angles: ``(p,)`` radians.
        margin: ``(K,)`` how far below its ray's maximum a voxel still counts fully, per class.
        softness: ``(K,)`` positive widths of the sigmoid, per class.

    Returns:
        Volume ``(B, K, D, H, W)``.

    Example:
        >>> x = torch.rand(1, 1, 4, 8, 8)
        >>> angles = torch.tensor([0.0, 1.0])
        >>> v = mip(x, angles)
        >>> backproject_explained(torch.ones(1, 2, 2, 4, v.shape[-1]), v, x, angles,
        ...                       torch.full((2,), 0.1), torch.full((2,), 0.3)).shape
        torch.Size([1, 2, 4, 8, 8])
    """
    check_views(views)
    check_views(image_views)
    check_volume(image)
    check_angles(angles, views.shape[2])
    batch, classes, count, depth, detector = views.shape
    if image_views.shape != (batch, 1, count, depth, detector):
        raise ValueError(f"image_views must be (B, 1, p, D, S) = {(batch, 1, count, depth, detector)} to match "
                         f"views {tuple(views.shape)}; got {tuple(image_views.shape)}")
    if image.shape[:3] != (batch, 1, depth):
        raise ValueError(f"image must be (B, 1, D, H, W) with (B, D) = {(batch, depth)} of the views; got "
                         f"{tuple(image.shape)}")
    for name, value in (("margin", margin), ("softness", softness)):
        if not isinstance(value, torch.Tensor) or value.shape != (classes,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a ({classes},) tensor, one per class of the views; got {shape}")
    device = views.device
    return _BackprojectExplained.apply(views, image_views.detach().to(device), image.detach().to(device),
                                       angles.to(device), margin, softness)

"""Reference kernels of the projection operators, in plain PyTorch (any device, any float dtype).

These are the raw kernels the autograd functions of :mod:`vol25d.ops` call where no faster ones apply, and the
oracle of those: the Triton kernels in :mod:`vol25d.ops.triton_kernels` and the CPU kernels in
:mod:`vol25d.ops.cpu_kernels` compute the same numbers and are tested against these. They work on a
flattened batch: volumes ``(N, D, H, W)`` and views ``(N, p, D, S)`` with ``N = B · C``. Every kernel loops
over views (and, for the MIP, over chunks of samples along the rays), so the memory it needs beyond its
input and output is one view's worth of samples, never a per-view copy of the volume.
"""

from __future__ import annotations

import torch

from vol25d.geometry import ray_samples, voxel_detector_coords

# Tolerance (voxels) for a MIP sample to count as inside the volume: float32 angles such as π/2 put edge
# samples a few ulps outside, and they must still be seen.
INSIDE_TOLERANCE = 1e-4

# Samples along a ray processed at once by the reference MIP: bounds its scratch memory.
_RAY_CHUNK = 64


def _linear_bins(angle: torch.Tensor, height: int, width: int, detector: int):
    """Lower bin index (into a detector padded with one guard bin each side) and weight of each voxel.

    Returns ``(index0, weight1)`` of shape ``(H·W,)``: voxel ``(h, w)`` adds ``(1 - weight1)`` of itself to
    padded bin ``index0`` and ``weight1`` to ``index0 + 1``. Voxels that fall off the detector land in the
    guard bins ``0`` and ``S + 1``, which the callers drop.
    """
    s = voxel_detector_coords(angle.reshape(1), height, width).reshape(-1)
    u = s + (detector - 1) / 2 + 1  # +1: the guard bin
    lower = torch.floor(u)
    weight1 = u - lower
    index0 = lower.long().clamp_(0, detector + 1)
    off = (lower < 0) | (lower > detector)
    weight1 = torch.where(off, torch.zeros_like(weight1), weight1)
    return index0, weight1


def project(volume: torch.Tensor, angles: torch.Tensor, detector: int) -> torch.Tensor:
    """Voxel-driven sum projection. ``(N, D, H, W)`` → ``(N, p, D, S)``."""
    n, depth, height, width = volume.shape
    flat = volume.reshape(n * depth, height * width)
    views = volume.new_zeros(n * depth, angles.numel(), detector + 3)
    for k, angle in enumerate(angles):
        index0, weight1 = _linear_bins(angle, height, width, detector)
        weight1 = weight1.to(volume.dtype)
        out = views[:, k]
        out.index_add_(1, index0, flat * (1 - weight1))
        out.index_add_(1, (index0 + 1).clamp_(max=detector + 2), flat * weight1)
    views = views[:, :, 1 : detector + 1]
    return views.reshape(n, depth, angles.numel(), detector).permute(0, 2, 1, 3).contiguous()


def backproject(views: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Voxel-driven linear back-projection, the exact transpose of :func:`project`. ``(N, p, D, S)`` →
    ``(N, D, H, W)``."""
    n, count, depth, detector = views.shape
    padded = torch.nn.functional.pad(views, (1, 2))
    volume = views.new_zeros(n, depth, height * width)
    for k in range(count):
        index0, weight1 = _linear_bins(angles[k], height, width, detector)
        weight1 = weight1.to(views.dtype)
        view = padded[:, k].reshape(n * depth, detector + 3)
        lower = view.index_select(1, index0)
        upper = view.index_select(1, (index0 + 1).clamp_(max=detector + 2))
        volume += (lower + (upper - lower) * weight1).view(n, depth, -1)
    return volume.reshape(n, depth, height, width)


def backproject_explained(
    views: torch.Tensor,
    image_views: torch.Tensor,
    image: torch.Tensor,
    angles: torch.Tensor,
    margin: torch.Tensor,
    softness: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """:func:`backproject` with each view's values weighed per voxel by
    ``σ((x - V̂_k + margin) / s) / σ(margin / s)`` (:mod:`vol25d.ops.explained`). ``views`` ``(N, p, D, S)``
    with ``N = Nb · K``; ``image_views`` ``(Nb, p, D, S)`` and ``image`` ``(Nb, D, H, W)``, row ``n`` of the
    views using row ``n // K`` of both and class ``n % K`` of ``margin`` and ``softness`` ``(K,)``. Computes
    in float32 (float64 stays float64) → ``(N, D, H, W)`` in the views' dtype."""
    n, count, depth, detector = views.shape
    images = image.shape[0]
    classes = n // images
    dtype = torch.float64 if views.dtype == torch.float64 else torch.float32
    padded = torch.nn.functional.pad(views.to(dtype), (1, 2))
    padded_image = torch.nn.functional.pad(image_views.to(dtype), (1, 2))
    x = image.to(dtype).reshape(images, 1, depth, height * width)
    m = margin.to(dtype).view(1, classes, 1, 1)
    s = softness.to(dtype).view(1, classes, 1, 1)
    norm = torch.sigmoid(m / s)
    volume = torch.zeros(images, classes, depth, height * width, dtype=dtype, device=views.device)

    def interpolate(source, rows, index0, weight1):
        view = source.reshape(rows * depth, detector + 3)
        lower = view.index_select(1, index0)
        upper = view.index_select(1, (index0 + 1).clamp(max=detector + 2))
        return (lower + (upper - lower) * weight1).view(rows, depth, -1)

    for k in range(count):
        index0, weight1 = _linear_bins(angles[k], height, width, detector)
        weight1 = weight1.to(dtype)
        p_hat = interpolate(padded[:, k], n, index0, weight1).view(images, classes, depth, -1)
        v_hat = interpolate(padded_image[:, k], images, index0, weight1).view(images, 1, depth, -1)
        volume += p_hat * torch.sigmoid((x - v_hat + m) / s) / norm
    return volume.reshape(n, depth, height, width).to(views.dtype)


def _inside(h: torch.Tensor, w: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Which samples at ``(h, w)`` lie within the plane, up to :data:`INSIDE_TOLERANCE`."""
    return (
        (h >= -INSIDE_TOLERANCE)
        & (h <= height - 1 + INSIDE_TOLERANCE)
        & (w >= -INSIDE_TOLERANCE)
        & (w <= width - 1 + INSIDE_TOLERANCE)
    )


def _bilinear_corners(h: torch.Tensor, w: torch.Tensor, height: int, width: int):
    """Corner indices into the flattened plane and weights for bilinear samples at ``(h, w)``.

    Returns ``(indices (4, …), weights (4, …), inside (…))``; ``inside`` is :func:`_inside`.
    """
    inside = _inside(h, w, height, width)
    h0 = torch.floor(h).clamp(0, max(height - 2, 0))
    w0 = torch.floor(w).clamp(0, max(width - 2, 0))
    fh = (h - h0).clamp(0, 1)
    fw = (w - w0).clamp(0, 1)
    h0i, w0i = h0.long(), w0.long()
    h1i = (h0i + 1).clamp(max=height - 1)
    w1i = (w0i + 1).clamp(max=width - 1)
    indices = torch.stack([h0i * width + w0i, h0i * width + w1i, h1i * width + w0i, h1i * width + w1i])
    weights = torch.stack([(1 - fh) * (1 - fw), (1 - fh) * fw, fh * (1 - fw), fh * fw])
    return indices, weights, inside


def mip(volume: torch.Tensor, angles: torch.Tensor, detector: int, keep_argmax: bool):
    """Ray-driven maximum intensity projection. ``(N, D, H, W)`` → views ``(N, p, D, S)``.

    The bilinear samples come from ``grid_sample`` (one call per view and chunk of samples along the rays:
    the four corners are never materialised), so they carry the float32 rounding of its normalised
    coordinates, about 1e-6 of a voxel.

    Returns ``(views, argmax)``; ``argmax`` is ``None`` unless ``keep_argmax``, else an ``int32`` tensor of
    the views' shape holding the index ``j`` of the winning sample along each ray (``-1`` for a ray that
    meets no sample; such a ray holds the volume's minimum).
    """
    n, depth, height, width = volume.shape
    count = angles.numel()
    compute = volume if volume.dtype in (torch.float32, torch.float64) else volume.float()
    source = compute.reshape(1, n * depth, height, width)
    h_all, w_all = ray_samples(angles.to(torch.float64), height, width, detector)
    inside_all = _inside(h_all, w_all, height, width).to(volume.device)
    # grid_sample's normalised coordinates (align_corners=True: -1 and 1 are the first and last voxel).
    # Samples within the tolerance outside are clamped onto the edge, as the exact bilinear weights are.
    grid_all = torch.stack(
        [w_all * (2 / max(width - 1, 1)) - 1, h_all * (2 / max(height - 1, 1)) - 1], dim=-1
    ).clamp(-1, 1).to(device=volume.device, dtype=compute.dtype)
    samples = h_all.shape[-1]
    views = compute.new_empty(n * depth, count, detector)
    argmax = torch.empty(n * depth, count, detector, dtype=torch.int32, device=volume.device) if keep_argmax else None
    floor = compute.reshape(n, -1).amin(dim=1).repeat_interleave(depth)[:, None]
    for k in range(count):
        best = torch.full((n * depth, detector), float("-inf"), dtype=compute.dtype, device=volume.device)
        best_j = torch.full((n * depth, detector), -1, dtype=torch.int32, device=volume.device) if keep_argmax else None
        for start in range(0, samples, _RAY_CHUNK):
            stop = min(start + _RAY_CHUNK, samples)
            inside = inside_all[k, :, start:stop]
            if not bool(inside.any()):
                continue
            value = torch.nn.functional.grid_sample(
                source, grid_all[k : k + 1, :, start:stop], mode="bilinear", padding_mode="border", align_corners=True
            )[0]
            value = value.masked_fill_(~inside, float("-inf"))
            chunk_best, chunk_j = value.max(dim=-1)
            better = chunk_best > best
            best = torch.where(better, chunk_best, best)
            if keep_argmax:
                best_j = torch.where(better, chunk_j.to(torch.int32) + start, best_j)
        views[:, k] = torch.where(torch.isinf(best), floor.expand_as(best), best)
        if keep_argmax:
            argmax[:, k] = best_j
    views = views.reshape(n, depth, count, detector).permute(0, 2, 1, 3).contiguous().to(volume.dtype)
    if keep_argmax:
        argmax = argmax.reshape(n, depth, count, detector).permute(0, 2, 1, 3).contiguous()
    return views, argmax


def mip_backward(grad_views: torch.Tensor, argmax: torch.Tensor, angles: torch.Tensor, height: int, width: int):
    """Gradient of :func:`mip` with respect to the volume: each ray's gradient goes to the four voxels of
    its winning sample, by their bilinear weights. ``(N, p, D, S)`` → ``(N, D, H, W)``."""
    n, count, depth, detector = grad_views.shape
    grad = grad_views.new_zeros(n * depth, height * width)
    h_all, w_all = ray_samples(angles.to(torch.float64), height, width, detector)
    grad_views = grad_views.permute(0, 2, 1, 3).reshape(n * depth, count, detector)
    argmax = argmax.permute(0, 2, 1, 3).reshape(n * depth, count, detector).long()
    rays = torch.arange(detector, device=grad_views.device)
    for k in range(count):
        j = argmax[:, k]
        hit = j >= 0
        j = j.clamp(min=0)
        h = h_all[k].to(grad_views.device)[rays[None, :], j]
        w = w_all[k].to(grad_views.device)[rays[None, :], j]
        indices, weights, _ = _bilinear_corners(h, w, height, width)
        g = grad_views[:, k] * hit
        for c in range(4):
            grad.scatter_add_(1, indices[c], g * weights[c].to(g.dtype))
    return grad.reshape(n, depth, height, width)

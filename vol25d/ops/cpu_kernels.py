"""Fast CPU kernels of the projection operators, in plain PyTorch: the same numbers as
:mod:`vol25d.ops.reference` (which stays the oracle the tests check these against), laid out for a CPU.

Same signatures and shapes as the reference kernels: volumes ``(N, D, H, W)``, views ``(N, p, D, S)``.
What makes them fast is the layout and one fused primitive. The volume is turned once per call into
``(H·W, N·D)`` rows (one row per in-plane position, holding every depth slice), and every operator is a
weighted sum of such rows: a bilinear MIP sample is 4 rows of the volume, a back-projected voxel 2 rows of
each view, a projected bin the rows of the voxels that fall on it. ``F.embedding_bag(mode="sum",
per_sample_weights=…)`` computes exactly that — gather, weigh and add whole rows, vectorised, with no
intermediate copy of the gathered rows (FBGEMM's kernel on x86 for float32).

* :func:`mip` takes only the samples inside the plane (the reference's ``grid_sample`` also runs over the
  half of the ray grid outside it), cut into segments of :data:`SEGMENT` consecutive samples of one ray (a
  segment's tail repeats its last sample, which leaves a maximum unchanged), so the maximum over a ray is a
  dense reduction. Its bilinear weights are exact (float64 geometry, like the reference's backward) where
  the reference's ``grid_sample`` rounds its coordinates to float32 (about 1e-6 voxel). Ties: the first
  sample along the ray (smallest ``j``) wins, as in the reference.
* :func:`project`, :func:`backproject` and :func:`backproject_explained` use the reference's linear bins
  (:func:`~vol25d.ops.reference._linear_bins`) and guard bins.
* :func:`backproject_explained_backward` (which :mod:`vol25d.ops.explained` calls where a kernel module has
  one) computes the explained back-projection's gradients in the same layout.
* :func:`mip_backward` is the reference's (one scatter per ray: already cheap).

Each view's sampling plan (``int32`` indices and weights) depends only on the angle and the sizes, so plans are kept
in a cache bounded to :data:`PLAN_CACHE_BYTES` (training draws its angles from the same m directions).
Scratch memory beyond the output is one view's samples at most: the MIP works in blocks of whole samples
(:data:`BLOCK_ROWS` rows), the back-projections one view at a time.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

from vol25d.geometry import ray_samples
from vol25d.ops.reference import _bilinear_corners, _inside, _linear_bins, mip_backward

__all__ = ["project", "backproject", "backproject_explained", "backproject_explained_backward", "mip", "mip_backward",
           "SEGMENT", "BLOCK_ROWS", "PLAN_CACHE_BYTES"]

# Consecutive samples of one ray reduced at once by the MIP (a segment's unused tail repeats its last sample).
SEGMENT = 16
# Sample rows per block of the MIP (whole segments): bounds its scratch (a block of rows of N·D values).
BLOCK_ROWS = 4096
# Voxel rows per block of the explained back-projection (every view of a block in turn, its sum in cache).
EXPLAINED_ROWS = 1024
# Bytes of sampling plans kept between calls.
PLAN_CACHE_BYTES = 256 * 2**20


class _PlanCache:
    """A least-recently-used dict of tuples of tensors, bounded by their total bytes."""

    def __init__(self, limit: int):
        self.limit, self.used, self.items = limit, 0, OrderedDict()

    @staticmethod
    def _bytes(value) -> int:
        return sum(t.numel() * t.element_size() for t in value if isinstance(t, torch.Tensor))

    def get(self, key, make):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        value = make()
        size = self._bytes(value)
        if size <= self.limit:
            while self.used + size > self.limit:
                _, old = self.items.popitem(last=False)
                self.used -= self._bytes(old)
            self.items[key] = value
            self.used += size
        return value

    def clear(self) -> None:
        self.items.clear()
        self.used = 0


_PLANS = _PlanCache(PLAN_CACHE_BYTES)


def _rows(volume: torch.Tensor) -> torch.Tensor:
    """``(N, D, H, W)`` → ``(H·W, N·D)``: one contiguous row per in-plane position."""
    n, depth, height, width = volume.shape
    return volume.reshape(n * depth, height * width).t().contiguous()


def _unrows(rows: torch.Tensor, n: int, depth: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_rows`."""
    return rows.t().reshape(n, depth, height, width).contiguous()


def _view_rows(views: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Views ``(N, p, D, S)`` as ``(p·(S + 3), N·D)`` rows: view ``k``'s bins from row ``k·(S + 3)``, with the
    guard bins of :func:`~vol25d.ops.reference._linear_bins` (one zero bin before, two after)."""
    n, count, depth, detector = views.shape
    rows = torch.zeros(count, detector + 3, n * depth, dtype=dtype)
    rows[:, 1 : detector + 1] = views.to(dtype).permute(1, 3, 0, 2).reshape(count, detector, n * depth)
    return rows.view(count * (detector + 3), n * depth)


def _key(angle: torch.Tensor) -> tuple:
    return float(angle), angle.dtype


def _gather_plan(angle: torch.Tensor, dtype: torch.dtype, height: int, width: int, detector: int):
    """Back-projection of one view as a gather: per voxel (row ``h·W + w``) the bins ``(H·W, 2)`` it reads
    (padded indices, :func:`~vol25d.ops.reference._linear_bins`) and their weights ``(1 - w₁, w₁)``."""

    def make():
        index0, weight1 = _linear_bins(angle, height, width, detector)
        index1 = (index0 + 1).clamp(max=detector + 2)
        weight1 = weight1.to(dtype)
        return torch.stack([index0, index1], dim=1).to(torch.int32), torch.stack([1 - weight1, weight1], dim=1)

    return _PLANS.get(("gather", *_key(angle), dtype, height, width, detector), make)


def _scatter_plan(angle: torch.Tensor, dtype: torch.dtype, height: int, width: int, detector: int):
    """Projection of one view as a gather: per padded bin (``S + 3`` bags) the voxels that fall on it and
    their weights, as ``embedding_bag`` inputs ``(voxels, offsets, weights)``."""

    def make():
        bins, weights = _gather_plan(angle, dtype, height, width, detector)
        bins, weights = bins.reshape(-1).long(), weights.reshape(-1)
        order = torch.argsort(bins, stable=True)
        voxels = torch.arange(height * width, dtype=torch.int32).repeat_interleave(2)[order]
        counts = torch.bincount(bins, minlength=detector + 3)
        offsets = (torch.cumsum(counts, 0) - counts).to(torch.int32)
        return voxels, offsets, weights[order]

    return _PLANS.get(("scatter", *_key(angle), dtype, height, width, detector), make)


def project(volume: torch.Tensor, angles: torch.Tensor, detector: int) -> torch.Tensor:
    """Voxel-driven sum projection (:func:`vol25d.ops.reference.project`). ``(N, D, H, W)`` → ``(N, p, D, S)``."""
    n, depth, height, width = volume.shape
    rows = _rows(volume)
    count = angles.numel()
    out = volume.new_empty(count, detector, n * depth)
    for k in range(count):
        voxels, offsets, weights = _scatter_plan(angles[k], volume.dtype, height, width, detector)
        bins = F.embedding_bag(voxels, rows, offsets, mode="sum", per_sample_weights=weights)
        out[k] = bins[1 : detector + 1]
    return out.reshape(count, detector, n, depth).permute(2, 0, 3, 1).contiguous()


def _gather_all(angles: torch.Tensor, dtype: torch.dtype, height: int, width: int, detector: int):
    """Every view's :func:`_gather_plan`, indexing :func:`_view_rows`: bins and weights ``(p, H·W, 2)``
    (view ``k``'s bins offset by ``k·(S + 3)``)."""
    plans = [_gather_plan(angles[k], dtype, height, width, detector) for k in range(angles.numel())]
    bins = torch.stack([b + k * (detector + 3) for k, (b, _) in enumerate(plans)])
    return bins, torch.stack([w for _, w in plans])


def backproject(views: torch.Tensor, angles: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Voxel-driven linear back-projection, the transpose of :func:`project`
    (:func:`vol25d.ops.reference.backproject`). ``(N, p, D, S)`` → ``(N, D, H, W)``: every voxel's row is one
    weighted sum of the ``2p`` view rows it reads."""
    n, count, depth, detector = views.shape
    if count == 0:
        return views.new_zeros(n, depth, height, width)
    bins, weights = _gather_all(angles, views.dtype, height, width, detector)
    out = F.embedding_bag(bins.transpose(0, 1).reshape(-1, 2 * count), _view_rows(views, views.dtype), mode="sum",
                          per_sample_weights=weights.transpose(0, 1).reshape(-1, 2 * count))
    return _unrows(out, n, depth, height, width)


def _explained_sources(views, image_views, image, margin, softness, dtype):
    """What both explained kernels interpolate and compare, with the weight's affine map folded in:
    ``source`` :func:`_view_rows` of the probabilities ``(…, N·D)`` beside the image's views times ``-1/s``
    per class ``(…, N·D)``, so one interpolation gives ``P̂_k`` and ``-V̂_k / s``; and ``xs = x / s + m / s``
    ``(H·W, B, K, D)``, so that the weight's argument is ``z = xs - V̂_k / s``."""
    n, count, depth, detector = views.shape
    images, classes = image.shape[0], n // image.shape[0]
    inv_s = (1 / softness.to(dtype)).view(1, classes, 1, 1, 1)
    scaled = (image_views.to(dtype)[:, None] * -inv_s).reshape(n, count, depth, detector)
    source = torch.cat([_view_rows(views, dtype), _view_rows(scaled, dtype)], dim=1)
    x = _rows(image.to(dtype)).view(-1, images, 1, depth)
    xs = x * inv_s.view(1, 1, classes, 1) + (margin.to(dtype) / softness.to(dtype)).view(1, 1, classes, 1)
    return source, xs


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
    """The explained back-projection (:func:`vol25d.ops.reference.backproject_explained`, same arguments):
    ``Σ_k P̂_k σ((x - V̂_k + margin) / s) / σ(margin / s)``, computed in float32 (float64 stays float64) →
    ``(N, D, H, W)`` in the views' dtype. Works in blocks of :data:`BLOCK_ROWS` voxel rows, every view of
    a block in turn, so a block's sum stays in cache."""
    n, count, depth, detector = views.shape
    images = image.shape[0]
    classes = n // images
    plane = height * width
    dtype = torch.float64 if views.dtype == torch.float64 else torch.float32
    m, s = margin.to(dtype), softness.to(dtype)
    split = n * depth
    out = torch.zeros(plane, images, classes, depth, dtype=dtype)
    if count:
        bins, weights = _gather_all(angles, dtype, height, width, detector)
        source, xs = _explained_sources(views, image_views, image, margin, softness, dtype)
        block = max(1, min(plane, EXPLAINED_ROWS))
        weight = torch.empty(block, images, classes, depth, dtype=dtype)
        for start in range(0, plane, block):
            stop = min(start + block, plane)
            rows = stop - start
            total, x_block, w = out[start:stop], xs[start:stop], weight[:rows]
            for k in range(count):
                both = F.embedding_bag(bins[k, start:stop], source, mode="sum",
                                       per_sample_weights=weights[k, start:stop])
                torch.add(x_block, both[:, split:].view(rows, images, classes, depth), out=w).sigmoid_()
                total.addcmul_(both[:, :split].view(rows, images, classes, depth), w)  # P̂_k · weight
    out.div_(torch.sigmoid(m / s).view(1, 1, classes, 1))
    return _unrows(out.view(plane, split), n, depth, height, width).to(views.dtype)


def _mip_plan(angle: torch.Tensor, dtype: torch.dtype, height: int, width: int, detector: int):
    """The samples of one view's MIP that lie inside the plane, as segments (see the module docstring).

    Returns ``(corners, weights, table, seg_start, seg_last, hit)``: ``corners`` ``(G·SEGMENT, 4)`` row
    indices into :func:`_rows` and ``weights`` ``(G·SEGMENT, 4)`` in ``dtype`` of the bilinear samples, ordered
    segment-major (row ``g·SEGMENT + r`` is sample ``r`` of segment ``g``: consecutive samples along a ray
    share corner rows, which stay in cache); ``table`` ``(B, S)`` the segments of each
    ray, padded with ``G`` (a row of ``-inf``); ``seg_start`` and ``seg_last`` ``(G, 1)`` each segment's
    first sample index ``j`` along its ray and its last offset; ``hit`` ``(S,)`` whether the ray meets a sample.
    """

    def make():
        h_all, w_all = ray_samples(angle.reshape(1).to(torch.float64), height, width, detector)
        h_all, w_all = h_all[0], w_all[0]  # (S, T)
        inside = _inside(h_all, w_all, height, width)
        length = inside.sum(dim=1)  # inside samples per ray: one interval (a line meets a box in an interval)
        first = inside.to(torch.int8).argmax(dim=1)
        segments = (length + SEGMENT - 1) // SEGMENT
        total = int(segments.sum())
        starts = torch.cumsum(segments, 0) - segments
        ray = torch.repeat_interleave(torch.arange(detector), segments)  # (G,)
        offset = torch.arange(total) - torch.repeat_interleave(starts, segments)
        seg_start = first[ray] + offset * SEGMENT
        seg_last = torch.minimum(length[ray] - offset * SEGMENT, torch.tensor(SEGMENT)) - 1
        j = seg_start[:, None] + torch.minimum(torch.arange(SEGMENT)[None, :], seg_last[:, None])  # (G, SEGMENT)
        i = ray[:, None].expand_as(j)
        corners, weights, _ = _bilinear_corners(h_all[i, j].reshape(-1), w_all[i, j].reshape(-1), height, width)
        most = int(segments.max()) if total else 0
        rows = torch.arange(max(most, 1))[:, None]
        table = torch.where(rows < segments[None, :], starts[None, :] + rows, torch.tensor(total))
        return (corners.t().to(torch.int32).contiguous(), weights.t().to(dtype).contiguous(), table, seg_start[:, None],
                seg_last[:, None], length > 0)

    return _PLANS.get(("mip", *_key(angle), dtype, height, width, detector), make)


def mip(volume: torch.Tensor, angles: torch.Tensor, detector: int, keep_argmax: bool):
    """Ray-driven maximum intensity projection (:func:`vol25d.ops.reference.mip`, same arguments and
    returns): ``(N, D, H, W)`` → ``(views (N, p, D, S), argmax or None)``, ``argmax`` the ``int32`` index
    ``j`` of each ray's winning sample (``-1`` for a ray that meets none, which holds the volume's minimum)."""
    n, depth, height, width = volume.shape
    count = angles.numel()
    compute = volume if volume.dtype in (torch.float32, torch.float64) else volume.float()
    rows = _rows(compute)  # (H·W, N·D)
    columns = rows.shape[1]
    floor = compute.reshape(n, -1).amin(dim=1).repeat_interleave(depth)[None, :]  # (1, N·D)
    views = compute.new_empty(count, detector, columns)
    argmax = torch.empty(count, detector, columns, dtype=torch.int32) if keep_argmax else None
    for k in range(count):
        corners, weights, table, seg_start, seg_last, hit = _mip_plan(angles[k], compute.dtype, height, width,
                                                                      detector)
        segments = seg_start.shape[0]
        best = compute.new_full((segments + 1, columns), float("-inf"))
        seg_best = best[:segments]
        best_r = torch.zeros(segments, columns, dtype=torch.int64) if keep_argmax else None
        per_block = max(1, BLOCK_ROWS // SEGMENT)  # whole segments per block
        for g0 in range(0, segments, per_block):
            g1 = min(g0 + per_block, segments)
            lo, hi = g0 * SEGMENT, g1 * SEGMENT
            value = F.embedding_bag(corners[lo:hi], rows, mode="sum", per_sample_weights=weights[lo:hi])
            value = value.view(g1 - g0, SEGMENT, columns)
            if keep_argmax:
                block_best, block_r = value[:, 0].clone(), best_r[g0:g1]
                for r in range(1, SEGMENT):  # strictly greater: the first sample of a tie wins
                    better = value[:, r] > block_best
                    block_best = torch.where(better, value[:, r], block_best)
                    block_r.masked_fill_(better, r)
                seg_best[g0:g1] = block_best
            else:
                seg_best[g0:g1] = value.amax(dim=1)
        # Segments → rays: the best of each ray's segments (padding entries of the table point at -inf).
        candidates = best.index_select(0, table.reshape(-1)).view(table.shape[0], detector, columns)
        if keep_argmax:
            seg_j = seg_start + torch.minimum(best_r, seg_last)  # (G, N·D): sample index of each segment's best
            seg_j = torch.cat([seg_j, seg_j.new_full((1, columns), -1)])
            ray_best = candidates[0]
            ray_j = seg_j.index_select(0, table[0])
            for g in range(1, table.shape[0]):
                better = candidates[g] > ray_best
                ray_best = torch.where(better, candidates[g], ray_best)
                ray_j = torch.where(better, seg_j.index_select(0, table[g]), ray_j)
            argmax[k] = torch.where(hit[:, None], ray_j, -1).to(torch.int32)
        else:
            ray_best = candidates.amax(dim=0)
        views[k] = torch.where(hit[:, None], ray_best, floor)
    views = views.reshape(count, detector, n, depth).permute(2, 0, 3, 1).contiguous().to(volume.dtype)
    if keep_argmax:
        argmax = argmax.reshape(count, detector, n, depth).permute(2, 0, 3, 1).contiguous()
    return views, argmax


def backproject_explained_backward(
    grad_volume: torch.Tensor,
    views: torch.Tensor,
    image_views: torch.Tensor,
    image: torch.Tensor,
    angles: torch.Tensor,
    margin: torch.Tensor,
    softness: torch.Tensor,
    want_views: bool,
    want_parameters: bool,
):
    """Gradients of :func:`backproject_explained`: the same numbers as the per-view composition of the
    reference operators in :mod:`vol25d.ops.explained`, computed in the row layout (one transpose of
    ``grad_volume`` and of the image, then per view one interpolation of the probabilities and the image's
    views together and one projection of the weighted gradient).

    Args:
        grad_volume: ``(N, D, H, W)`` the gradient of the output, ``N = B · K`` (row ``n`` uses image
            ``n // K`` and class ``n % K``).
        views, image_views, image, angles, margin, softness: as in :func:`backproject_explained`.
        want_views, want_parameters: which gradients to compute.

    Returns:
        ``(grad_views (N, p, D, S) or None, grad_margin (K,), grad_softness (K,))`` in the compute dtype
        (float32, or float64 for float64 views); the parameters' are zeros unless ``want_parameters``.
    """
    n, count, depth, detector = views.shape
    height, width = image.shape[-2:]
    images = image.shape[0]
    classes = n // images
    plane = height * width
    dtype = torch.float64 if views.dtype == torch.float64 else torch.float32
    grad = _rows(grad_volume.to(dtype)).view(plane, images, classes, depth)
    m, s = margin.to(dtype), softness.to(dtype)
    inv_s = (1 / s).view(1, 1, classes, 1)
    sa = torch.sigmoid(m / s)
    a = (m / s).view(1, 1, classes, 1)
    inv_sa = (1 / sa).view(1, 1, classes, 1)
    split = n * depth
    grad_views = torch.zeros(count, detector + 3, split, dtype=dtype) if want_views else None
    grad_margin = torch.zeros(classes, dtype=dtype)
    grad_softness = torch.zeros(classes, dtype=dtype)
    if count:
        bins, weights = _gather_all(angles, dtype, height, width, detector)
        offsets = (torch.arange(count, dtype=torch.int32) * (detector + 3)).view(count, 1, 1)
        local = (bins - offsets).long()  # each view's own bins, int64 once for index_add_
        source, xs = _explained_sources(views, image_views, image, margin, softness, dtype)
        block = max(1, min(plane, EXPLAINED_ROWS))
        shape = (block, images, classes, depth)
        z, sz, weighted = (torch.empty(shape, dtype=dtype) for _ in range(3))
        part = torch.empty(block, split, dtype=dtype)
        sums_margin, sums_softness = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        sa4, c4 = sa.view(1, 1, classes, 1), (a * (1 - sa.view(1, 1, classes, 1)))
        for start in range(0, plane, block):
            stop = min(start + block, plane)
            rows = stop - start
            g, x_block = grad[start:stop], xs[start:stop]
            z_, sz_, w_, part_ = z[:rows], sz[:rows], weighted[:rows], part[:rows]
            for k in range(count):
                both = F.embedding_bag(bins[k, start:stop], source, mode="sum",
                                       per_sample_weights=weights[k, start:stop])
                torch.add(x_block, both[:, split:].view(rows, images, classes, depth), out=z_)  # (x - V̂_k + m) / s
                torch.sigmoid(z_, out=sz_)
                torch.mul(g, sz_, out=w_).mul_(inv_sa)  # grad · weight
                if want_views:  # its projection: each voxel's row spread onto its two bins
                    flat, w01 = w_.view(rows, split), weights[k, start:stop]
                    torch.mul(flat, w01[:, 1:2], out=part_)
                    grad_views[k].index_add_(0, local[k, start:stop, 1], part_)
                    torch.mul(flat, w01[:, 0:1], out=part_)
                    grad_views[k].index_add_(0, local[k, start:stop, 0], part_)
                if want_parameters:
                    common = w_.mul_(both[:, :split].view(rows, images, classes, depth)).mul_(inv_s)
                    t = torch.sub(sa4, sz_, out=sz_)  # σ(a) - σ(z)
                    sums_margin[:rows].addcmul_(common, t)
                    z_.mul_(t.add_(1 - sa4)).neg_().add_(c4)  # a (1 - σ(a)) - z (1 - σ(z))
                    sums_softness[:rows].addcmul_(common, z_)
        if want_parameters:
            grad_margin = sums_margin.sum(dim=(0, 1, 3))
            grad_softness = sums_softness.sum(dim=(0, 1, 3))
        if want_views:
            grad_views = grad_views[:, 1 : detector + 1]
    elif want_views:
        grad_views = torch.zeros(count, detector, split, dtype=dtype)
    if want_views:
        grad_views = grad_views.reshape(count, detector, n, depth).permute(2, 0, 3, 1).contiguous()
    return grad_views, grad_margin, grad_softness

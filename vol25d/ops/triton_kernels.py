"""Triton kernels of the projection operators: the same functions, signatures and numbers as
:mod:`vol25d.ops.reference`, on flattened batches (volumes ``(N, D, H, W)``, views ``(N, p, D, S)``).

Every kernel is launched on a 1-D grid whose fastest-varying part is the tile within one ``(n, D-slab)``
and whose slowest is the ``(n, D-slab)`` itself, so all programs reading one slab of the volume (or of the
views) run together and the slab is fetched from DRAM about once and then served from L2 to every view.
Inside a program, ``D`` is a tile dimension: every geometric quantity (detector position, sample position,
bilinear corners and weights) depends on ``(h, w)`` or ``(view, bin, sample)`` only and is computed once for
the whole ``D``-slab. Loads are converted to float32 and everything accumulates in float32; outputs take the
input's dtype. Float64 inputs go to the reference kernels (the kernels here compute geometry in float32).

The lanes of a ``project``/``mip`` tile are neighbouring rays, one detector step apart: along ``W`` (the
contiguous axis) for views with ``|sin θ| > |cos θ|``, but along ``H`` for the others, whose loads would then
be a stride ``W`` apart. Those views read a transposed ``(N, D, W, H)`` copy of the volume instead (one extra
read and write of the volume per call, shared by all views; ``transposed_copy=`` overrides the default).

Determinism: ``project``, ``backproject``, ``backproject_explained``, ``mip`` (values and argmax; ties go to the first sample along the
ray) are gathers, bit-reproducible from run to run. ``mip_backward`` scatters with ``tl.atomic_add`` by
default (float32 additions in a run-dependent order: not bit-reproducible); ``deterministic=True``, the
environment variable ``VOL25D_DETERMINISTIC=1`` or ``torch.use_deterministic_algorithms(True)`` select a
gather form that is.

Importing this module needs ``triton`` (an ImportError otherwise, so :mod:`vol25d.ops.backend` falls back to
the reference). The kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set
before this module was imported (how the tests check them).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from vol25d.geometry import ray_samples
from vol25d.ops import reference
from vol25d.ops.reference import INSIDE_TOLERANCE

__all__ = ["project", "backproject", "backproject_explained", "mip", "mip_backward"]

# Default tile sizes. Chosen for an H100-class GPU by reasoning, not yet by measurement: a tile is
# BLOCK_D depth slices × a block of bins (or voxels), so per-sample geometry is amortised over BLOCK_D.
_MIP_BLOCK_D, _MIP_BLOCK_S, _MIP_VIEWS = 8, 64, 2
_PROJECT_BLOCK_D, _PROJECT_BLOCK_S = 8, 64
_BACK_BLOCK_D, _BACK_BLOCK_H, _BACK_BLOCK_W = 4, 16, 16


# ----------------------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _bilinear(h, w, h_clamp, w_clamp, height, width):
    """Corners and fractions of bilinear samples at ``(h, w)``, clamped as in
    ``reference._bilinear_corners``: ``h0 = clamp(floor(h), 0, max(H - 2, 0))``, ``h1 = min(h0 + 1, H - 1)``,
    ``fh = clamp(h - h0, 0, 1)`` (and the same in ``w``)."""
    h0f = tl.minimum(tl.maximum(tl.floor(h), 0.0), h_clamp)
    w0f = tl.minimum(tl.maximum(tl.floor(w), 0.0), w_clamp)
    fh = tl.minimum(tl.maximum(h - h0f, 0.0), 1.0)
    fw = tl.minimum(tl.maximum(w - w0f, 0.0), 1.0)
    h0 = h0f.to(tl.int32)
    w0 = w0f.to(tl.int32)
    h1 = tl.minimum(h0 + 1, height - 1)
    w1 = tl.minimum(w0 + 1, width - 1)
    return h0, h1, w0, w1, fh, fw


@triton.jit
def _layout(c, sn, x_ptr, xt_ptr, height, width, HAS_TRANSPOSED: tl.constexpr):
    """Which copy of the volume a view reads, and its ``(h, w)`` strides. The lanes of a tile are rays (or
    bins), one detector step apart: mostly along ``h`` when ``|cos θ| ≥ |sin θ|``. Such a view reads the
    ``(…, W, H)`` copy, if there is one, where ``h`` is the contiguous axis, so that a warp's loads coalesce."""
    if HAS_TRANSPOSED:
        use_t = tl.abs(c) >= tl.abs(sn)
        src = tl.where(use_t, xt_ptr, x_ptr)
        stride_h = tl.where(use_t, 1, width)
        stride_w = tl.where(use_t, height, 1)
    else:
        src = x_ptr
        stride_h = width
        stride_w = 1
    return src, stride_h, stride_w


# ----------------------------------------------------------------------------------------------------------
# Sum projection and back-projection (voxel-driven linear interpolation on the detector)
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _voxel_tile(pid, depth, height, width, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """The voxels of program ``pid`` in a per-voxel kernel: one ``BLOCK_H × BLOCK_W`` tile of the plane for a
    slab of ``BLOCK_D`` slices of one ``n``; tiles vary fastest, so the programs of one slab run together.
    Returns ``(n, offs_d, h, w, mask_d, mask_v)``."""
    tiles_w = tl.cdiv(width, BLOCK_W)
    tiles = tl.cdiv(height, BLOCK_H) * tiles_w
    tile = pid % tiles
    nd = pid // tiles
    slabs = tl.cdiv(depth, BLOCK_D)
    n = nd // slabs
    offs_d = (nd % slabs) * BLOCK_D + tl.arange(0, BLOCK_D)
    idx = tl.arange(0, BLOCK_H * BLOCK_W)
    h = (tile // tiles_w) * BLOCK_H + idx // BLOCK_W
    w = (tile % tiles_w) * BLOCK_W + idx % BLOCK_W
    return n, offs_d, h, w, offs_d < depth, (h < height) & (w < width)


@triton.jit
def _store_voxel_tile(out_ptr, acc, n, offs_d, h, w, mask_d, mask_v, depth, height, width):
    """Write a :func:`_voxel_tile`'s fp32 accumulator into the ``(N, D, H, W)`` output in its dtype."""
    plane = (n * depth + offs_d).to(tl.int64) * height * width
    ptrs = out_ptr + plane[:, None] + (h * width + w)[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_d[:, None] & mask_v[None, :])


@triton.jit
def _ray_tile(pid, count, depth, detector, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """The rays of program ``pid`` in a per-bin kernel: ``BLOCK_S`` bins of one view ``k`` for a slab of
    ``BLOCK_D`` slices of one ``n``. Returns ``(n, k, offs_d, offs_s, mask_d, mask_s)``."""
    sblocks = tl.cdiv(detector, BLOCK_S)
    sb = pid % sblocks
    rest = pid // sblocks
    k = rest % count
    nd = rest // count
    slabs = tl.cdiv(depth, BLOCK_D)
    n = nd // slabs
    offs_d = (nd % slabs) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    return n, k, offs_d, offs_s, offs_d < depth, offs_s < detector


@triton.jit
def _backproject_kernel(
    views_ptr, cos_ptr, sin_ptr, out_ptr,
    count, depth, height, width, detector,
    ch, cw, half_s,
    BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # One program: a BLOCK_H × BLOCK_W tile of voxels for BLOCK_D slices of one n; loops over all views,
    # gathering the two nearest bins of each; writes its tile once.
    n, offs_d, h, w, mask_d, mask_v = _voxel_tile(tl.program_id(0), depth, height, width, BLOCK_D, BLOCK_H, BLOCK_W)
    hc = h.to(tl.float32) - ch
    wc = w.to(tl.float32) - cw
    view_row = (n * count * depth + offs_d).to(tl.int64) * detector  # row (n, k=0, d) of the views
    acc = tl.zeros((BLOCK_D, BLOCK_H * BLOCK_W), dtype=tl.float32)
    for k in range(count):
        c = tl.load(cos_ptr + k)
        sn = tl.load(sin_ptr + k)
        u = hc * c - wc * sn + half_s  # detector position in bin units
        i0f = tl.floor(u)
        f = u - i0f
        i0 = i0f.to(tl.int32)
        m0 = mask_v & (i0 >= 0) & (i0 < detector)
        m1 = mask_v & (i0 >= -1) & (i0 < detector - 1)
        rows = view_row + k * depth * detector
        v0 = tl.load(views_ptr + rows[:, None] + i0[None, :], mask=mask_d[:, None] & m0[None, :], other=0.0)
        v1 = tl.load(views_ptr + rows[:, None] + (i0 + 1)[None, :], mask=mask_d[:, None] & m1[None, :], other=0.0)
        acc += v0.to(tl.float32) * (1.0 - f)[None, :] + v1.to(tl.float32) * f[None, :]
    _store_voxel_tile(out_ptr, acc, n, offs_d, h, w, mask_d, mask_v, depth, height, width)


@triton.jit
def _backproject_explained_kernel(
    views_ptr, image_views_ptr, image_ptr, margin_ptr, softness_ptr, cos_ptr, sin_ptr, out_ptr,
    classes, count, depth, height, width, detector,
    ch, cw, half_s,
    BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # The back-projection kernel with each view's two-bin interpolation of the probabilities multiplied by
    # the explained weight σ((x - V̂_k + margin) / s) / σ(margin / s), V̂_k the same interpolation of the
    # image's view; row n of the views reads row n // classes of the image and its views.
    n, offs_d, h, w, mask_d, mask_v = _voxel_tile(tl.program_id(0), depth, height, width, BLOCK_D, BLOCK_H, BLOCK_W)
    b = n // classes
    cls = n % classes
    margin = tl.load(margin_ptr + cls).to(tl.float32)
    inv_s = 1.0 / tl.load(softness_ptr + cls).to(tl.float32)
    norm = 1.0 / (1.0 + tl.exp(-margin * inv_s))
    hc = h.to(tl.float32) - ch
    wc = w.to(tl.float32) - cw
    mask = mask_d[:, None] & mask_v[None, :]
    plane = (b * depth + offs_d).to(tl.int64) * height * width
    x = tl.load(image_ptr + plane[:, None] + (h * width + w)[None, :], mask=mask, other=0.0).to(tl.float32)
    view_row = (n * count * depth + offs_d).to(tl.int64) * detector
    image_row = (b * count * depth + offs_d).to(tl.int64) * detector
    acc = tl.zeros((BLOCK_D, BLOCK_H * BLOCK_W), dtype=tl.float32)
    for k in range(count):
        c = tl.load(cos_ptr + k)
        sn = tl.load(sin_ptr + k)
        u = hc * c - wc * sn + half_s
        i0f = tl.floor(u)
        f = (u - i0f)[None, :]
        i0 = i0f.to(tl.int32)
        m0 = mask_d[:, None] & (mask_v & (i0 >= 0) & (i0 < detector))[None, :]
        m1 = mask_d[:, None] & (mask_v & (i0 >= -1) & (i0 < detector - 1))[None, :]
        rows = view_row + k * depth * detector
        v0 = tl.load(views_ptr + rows[:, None] + i0[None, :], mask=m0, other=0.0).to(tl.float32)
        v1 = tl.load(views_ptr + rows[:, None] + (i0 + 1)[None, :], mask=m1, other=0.0).to(tl.float32)
        irows = image_row + k * depth * detector
        g0 = tl.load(image_views_ptr + irows[:, None] + i0[None, :], mask=m0, other=0.0).to(tl.float32)
        g1 = tl.load(image_views_ptr + irows[:, None] + (i0 + 1)[None, :], mask=m1, other=0.0).to(tl.float32)
        p_hat = v0 * (1.0 - f) + v1 * f
        v_hat = g0 * (1.0 - f) + g1 * f
        weight = 1.0 / (1.0 + tl.exp(-(x - v_hat + margin) * inv_s))
        acc += p_hat * weight / norm
    _store_voxel_tile(out_ptr, acc, n, offs_d, h, w, mask_d, mask_v, depth, height, width)


@triton.jit
def _project_kernel(
    x_ptr, xt_ptr, cos_ptr, sin_ptr, out_ptr,
    count, depth, height, width, detector,
    ch, cw, half_s,
    HAS_TRANSPOSED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_S bins of one view for BLOCK_D slices of one n. The exact transpose of the
    # back-projection as a gather: walk the plane axis closer to the ray direction (W when |cos| ≥ |sin|,
    # else H); in each line of voxels across it, the voxels within one bin of s_i are at most 3 consecutive
    # ones (the line crosses the detector with slope ≥ 1/√2), found in closed form, and each gets the same
    # weight the back-projection gives it (same formula, so the pair is adjoint to float32 rounding).
    n, k, offs_d, offs_s, mask_d, mask_s = _ray_tile(tl.program_id(0), count, depth, detector, BLOCK_D, BLOCK_S)
    s = offs_s.to(tl.float32) - half_s
    c = tl.load(cos_ptr + k)
    sn = tl.load(sin_ptr + k)
    src, stride_h, stride_w = _layout(c, sn, x_ptr, xt_ptr, height, width, HAS_TRANSPOSED)
    along_w = tl.abs(c) >= tl.abs(sn)
    lines = tl.where(along_w, width, height)  # how many lines to walk
    across = tl.where(along_w, height, width)  # voxels per line
    slope = tl.where(along_w, c, sn)  # ds/d(across index), |slope| ≥ 1/√2
    reach = 1.0 / tl.abs(slope)  # half-width of the support of Λ, in voxels of the line
    plane = (n * depth + offs_d).to(tl.int64) * height * width
    acc = tl.zeros((BLOCK_D, BLOCK_S), dtype=tl.float32)
    for a in range(lines):
        af = a + 0.0  # float32 (the loop index is int32)
        # Position along the line (index into `across`) where s(h, w) = s_i.
        centre = tl.where(along_w, ch + (s + (af - cw) * sn) / slope, cw + ((af - ch) * c - s) / slope)
        first = tl.ceil(centre - reach).to(tl.int32)
        for q in tl.static_range(3):
            b = first + q
            h = tl.where(along_w, b, a)
            w = tl.where(along_w, a, b)
            u = (h.to(tl.float32) - ch) * c - (w.to(tl.float32) - cw) * sn + half_s
            i0f = tl.floor(u)
            f = u - i0f
            i0 = i0f.to(tl.int32)
            weight = tl.where(i0 == offs_s, 1.0 - f, tl.where(i0 + 1 == offs_s, f, 0.0))
            valid = mask_s & (b >= 0) & (b < across) & (weight != 0.0)
            ptrs = src + plane[:, None] + (h * stride_h + w * stride_w)[None, :]
            x = tl.load(ptrs, mask=mask_d[:, None] & valid[None, :], other=0.0)
            acc += x.to(tl.float32) * weight[None, :]
    rows = ((n * count + k) * depth + offs_d).to(tl.int64) * detector
    ptrs = out_ptr + rows[:, None] + offs_s[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_d[:, None] & mask_s[None, :])


# ----------------------------------------------------------------------------------------------------------
# Maximum intensity projection (ray-driven, bilinear samples one voxel apart)
# ----------------------------------------------------------------------------------------------------------


@triton.jit
def _mip_kernel(
    x_ptr, xt_ptr, cos_ptr, sin_ptr, floor_ptr, out_ptr, arg_ptr,
    count, depth, height, width, detector,
    ch, cw, half_s, t_first, tol, h_clamp, w_clamp, h_last, w_last, samples,
    KEEP_ARGMAX: tl.constexpr, HAS_TRANSPOSED: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, VIEWS: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_S rays of VIEWS consecutive views for BLOCK_D slices of one n. Per view it walks the
    # samples j that can fall inside the volume for some ray of the block (the block's chord, from a slab
    # test, one sample of margin each side), computes each sample's position and bilinear corners once for
    # the D-slab, and keeps a running max (and its first j) over the samples inside the volume.
    # The ray-tile layout with blocks of VIEWS views in place of single views.
    # A kernel that reads better whole: the slab test, the sample loop and the running max share the
    # block's registers, and Triton inlines helpers anyway (_ray_tile and _layout are the parts it reuses).
    n, vb, offs_d, offs_s, mask_d, mask_s = _ray_tile(
        tl.program_id(0), tl.cdiv(count, VIEWS), depth, detector, BLOCK_D, BLOCK_S
    )
    s = offs_s.to(tl.float32) - half_s
    h_lo = -tol
    h_hi = h_last + tol
    w_lo = -tol
    w_hi = w_last + tol
    plane = (n * depth + offs_d).to(tl.int64) * height * width
    empty_value = tl.load(floor_ptr + n)
    big = samples + 4.0
    for v in range(VIEWS):
        k_raw = vb * VIEWS + v
        k = tl.minimum(k_raw, count - 1)  # the last block may be partial: compute, do not store
        c = tl.load(cos_ptr + k)
        sn = tl.load(sin_ptr + k)
        src, stride_h, stride_w = _layout(c, sn, x_ptr, xt_ptr, height, width, HAS_TRANSPOSED)
        base = src + plane[:, None]
        h_ray = ch + s * c  # sample j of ray i sits at (h_ray + t_j sin, w_ray + t_j cos)
        w_ray = cw - s * sn
        # Chord of each ray through the (tolerance-widened) volume, in t.
        sn_safe = tl.where(sn == 0.0, 1.0, sn)
        c_safe = tl.where(c == 0.0, 1.0, c)
        a1 = (h_lo - h_ray) / sn_safe
        a2 = (h_hi - h_ray) / sn_safe
        h_in = (h_ray >= h_lo) & (h_ray <= h_hi)
        th_lo = tl.where(sn == 0.0, tl.where(h_in, -big, big), tl.minimum(a1, a2))
        th_hi = tl.where(sn == 0.0, tl.where(h_in, big, -big), tl.maximum(a1, a2))
        b1 = (w_lo - w_ray) / c_safe
        b2 = (w_hi - w_ray) / c_safe
        w_in = (w_ray >= w_lo) & (w_ray <= w_hi)
        tw_lo = tl.where(c == 0.0, tl.where(w_in, -big, big), tl.minimum(b1, b2))
        tw_hi = tl.where(c == 0.0, tl.where(w_in, big, -big), tl.maximum(b1, b2))
        t_lo = tl.maximum(tl.maximum(th_lo, tw_lo), -big) - t_first
        t_hi = tl.minimum(tl.minimum(th_hi, tw_hi), big) - t_first
        hit_ray = mask_s & (t_lo <= t_hi)
        j_lo = tl.where(hit_ray, tl.maximum(tl.floor(t_lo) - 1.0, 0.0), big).to(tl.int32)
        j_hi = tl.where(hit_ray, tl.minimum(tl.ceil(t_hi) + 2.0, samples), -1.0).to(tl.int32)
        j_start = tl.min(j_lo, axis=0)
        j_stop = tl.max(j_hi, axis=0)
        best = tl.full((BLOCK_D, BLOCK_S), float("-inf"), dtype=tl.float32)
        best_j = tl.full((BLOCK_D, BLOCK_S), -1, dtype=tl.int32)
        for j in range(j_start, j_stop):
            t = t_first + j  # float32
            h = h_ray + t * sn
            w = w_ray + t * c
            inside = mask_s & (h >= h_lo) & (h <= h_hi) & (w >= w_lo) & (w <= w_hi)
            h0, h1, w0, w1, fh, fw = _bilinear(h, w, h_clamp, w_clamp, height, width)
            m = mask_d[:, None] & inside[None, :]
            row0 = h0 * stride_h
            row1 = h1 * stride_h
            col0 = w0 * stride_w
            col1 = w1 * stride_w
            x00 = tl.load(base + (row0 + col0)[None, :], mask=m, other=0.0).to(tl.float32)
            x01 = tl.load(base + (row0 + col1)[None, :], mask=m, other=0.0).to(tl.float32)
            x10 = tl.load(base + (row1 + col0)[None, :], mask=m, other=0.0).to(tl.float32)
            x11 = tl.load(base + (row1 + col1)[None, :], mask=m, other=0.0).to(tl.float32)
            value = (
                x00 * ((1.0 - fh) * (1.0 - fw))[None, :]
                + x01 * ((1.0 - fh) * fw)[None, :]
                + x10 * (fh * (1.0 - fw))[None, :]
                + x11 * (fh * fw)[None, :]
            )
            value = tl.where(m, value, float("-inf"))
            better = value > best  # strict: the first maximum along the ray wins, as in the reference
            best = tl.where(better, value, best)
            if KEEP_ARGMAX:
                best_j = tl.where(better, j, best_j)
        result = tl.where(best == float("-inf"), empty_value, best)
        rows = ((n * count + k) * depth + offs_d).to(tl.int64) * detector
        bins_here = tl.where(k_raw < count, detector, 0)  # no bins for the padding view of the last block
        store_mask = mask_d[:, None] & (offs_s < bins_here)[None, :]
        tl.store(out_ptr + rows[:, None] + offs_s[None, :], result.to(out_ptr.dtype.element_ty), mask=store_mask)
        if KEEP_ARGMAX:
            tl.store(arg_ptr + rows[:, None] + offs_s[None, :], best_j, mask=store_mask)


@triton.jit
def _mip_backward_scatter_kernel(
    grad_views_ptr, arg_ptr, cos_ptr, sin_ptr, grad_ptr,
    count, depth, height, width, detector,
    ch, cw, half_s, t_first, h_clamp, w_clamp,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_S rays of one view for BLOCK_D slices of one n; each ray that met the volume adds
    # its gradient to the 4 corners of its winning sample with atomics (float32; order run-dependent).
    n, k, offs_d, offs_s, mask_d, mask_s = _ray_tile(tl.program_id(0), count, depth, detector, BLOCK_D, BLOCK_S)
    mask = mask_d[:, None] & mask_s[None, :]
    s = offs_s.to(tl.float32) - half_s
    c = tl.load(cos_ptr + k)
    sn = tl.load(sin_ptr + k)
    h_ray = ch + s * c
    w_ray = cw - s * sn
    rows = ((n * count + k) * depth + offs_d).to(tl.int64) * detector
    j = tl.load(arg_ptr + rows[:, None] + offs_s[None, :], mask=mask, other=-1)
    g = tl.load(grad_views_ptr + rows[:, None] + offs_s[None, :], mask=mask, other=0.0).to(tl.float32)
    hit = mask & (j >= 0)
    t = t_first + j.to(tl.float32)
    h = h_ray[None, :] + t * sn
    w = w_ray[None, :] + t * c
    h0, h1, w0, w1, fh, fw = _bilinear(h, w, h_clamp, w_clamp, height, width)
    base = grad_ptr + ((n * depth + offs_d).to(tl.int64) * height * width)[:, None]
    tl.atomic_add(base + h0 * width + w0, g * (1.0 - fh) * (1.0 - fw), mask=hit)
    tl.atomic_add(base + h0 * width + w1, g * (1.0 - fh) * fw, mask=hit)
    tl.atomic_add(base + h1 * width + w0, g * fh * (1.0 - fw), mask=hit)
    tl.atomic_add(base + h1 * width + w1, g * fh * fw, mask=hit)


@triton.jit
def _mip_backward_gather_kernel(
    grad_views_ptr, arg_ptr, cos_ptr, sin_ptr, out_ptr,
    count, depth, height, width, detector,
    ch, cw, half_s, t_first, h_clamp, w_clamp,
    BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # Deterministic form. One program: a tile of voxels for BLOCK_D slices of one n, looping over views. A
    # voxel is a corner (with non-zero weight) of a sample less than one voxel away in h and in w, so that
    # sample's ray is within √2 < 1.5 of the voxel's detector position: of the 3 rays nearest to it, take
    # each one's winning sample and add the bilinear weight this voxel has in it.
    n, offs_d, hv, wv, mask_d, mask_v = _voxel_tile(tl.program_id(0), depth, height, width, BLOCK_D, BLOCK_H, BLOCK_W)
    hc = hv.to(tl.float32) - ch
    wc = wv.to(tl.float32) - cw
    acc = tl.zeros((BLOCK_D, BLOCK_H * BLOCK_W), dtype=tl.float32)
    for k in range(count):
        c = tl.load(cos_ptr + k)
        sn = tl.load(sin_ptr + k)
        nearest = tl.floor(hc * c - wc * sn + half_s + 0.5).to(tl.int32)
        rows = ((n * count + k) * depth + offs_d).to(tl.int64) * detector
        for q in tl.static_range(3):
            i = nearest + (q - 1)
            ray_ok = mask_v & (i >= 0) & (i < detector)
            m = mask_d[:, None] & ray_ok[None, :]
            j = tl.load(arg_ptr + rows[:, None] + i[None, :], mask=m, other=-1)
            g = tl.load(grad_views_ptr + rows[:, None] + i[None, :], mask=m, other=0.0).to(tl.float32)
            s = i.to(tl.float32) - half_s  # the same float32 expressions as the forward kernel
            h_ray = ch + s * c
            w_ray = cw - s * sn
            t = t_first + j.to(tl.float32)
            h = h_ray[None, :] + t * sn
            w = w_ray[None, :] + t * c
            h0, h1, w0, w1, fh, fw = _bilinear(h, w, h_clamp, w_clamp, height, width)
            hvb = hv[None, :]
            wvb = wv[None, :]
            weight_h = tl.where(hvb == h0, 1.0 - fh, 0.0) + tl.where(hvb == h1, fh, 0.0)
            weight_w = tl.where(wvb == w0, 1.0 - fw, 0.0) + tl.where(wvb == w1, fw, 0.0)
            acc += tl.where(m & (j >= 0), g * weight_h * weight_w, 0.0)
    _store_voxel_tile(out_ptr, acc, n, offs_d, hv, wv, mask_d, mask_v, depth, height, width)


# ----------------------------------------------------------------------------------------------------------
# Host wrappers: the raw-kernel interface of vol25d.ops.reference
# ----------------------------------------------------------------------------------------------------------


def _interpreted() -> bool:
    return type(_mip_kernel).__name__ == "InterpretedFunction"


def _check_device(tensor: torch.Tensor) -> None:
    if not tensor.is_cuda and not _interpreted():
        raise ValueError(
            f"the Triton kernels need CUDA tensors (got a tensor on {tensor.device}); set TRITON_INTERPRET=1 "
            "before importing vol25d.ops.triton_kernels to run them on the CPU, or use "
            "VOL25D_OPS_BACKEND=reference"
        )


def _trig(angles: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos θ`` and ``sin θ`` as float32 on ``device``, rounded once from float64."""
    radians = angles.detach().to(dtype=torch.float64).reshape(-1)
    return torch.cos(radians).float().to(device).contiguous(), torch.sin(radians).float().to(device).contiguous()


@functools.lru_cache(maxsize=64)
def _sample_axis(height: int, width: int) -> tuple[float, int]:
    """``(t_0, T)``: the first sample's ray coordinate and the number of samples of
    :func:`vol25d.geometry.ray_samples`, read from it so the argmax indices mean the same thing."""
    _, w = ray_samples(torch.zeros(1, dtype=torch.float64), height, width, 1)
    return float(w[0, 0, 0]) - (width - 1) / 2, int(w.shape[-1])


def _plane_constants(height: int, width: int, detector: int) -> dict:
    return {"ch": (height - 1) / 2, "cw": (width - 1) / 2, "half_s": (detector - 1) / 2}


def _transposed_copy(volume: torch.Tensor, count: int, requested: bool | None) -> torch.Tensor | None:
    """The ``(N, D, W, H)`` copy of ``volume`` that views with ``|cos θ| ≥ |sin θ|`` read (see ``_layout``),
    or ``None``. It costs one read and one write of the volume, shared by all views; by default it is made
    for two views or more (a heuristic: the angles are not inspected, which would need a device sync)."""
    if requested is None:
        requested = count >= 2
    return volume.transpose(-1, -2).contiguous() if requested else None


def _deterministic(requested: bool | None) -> bool:
    if requested is not None:
        return requested
    return torch.are_deterministic_algorithms_enabled() or os.environ.get("VOL25D_DETERMINISTIC", "0") == "1"


def project(
    volume: torch.Tensor,
    angles: torch.Tensor,
    detector: int,
    *,
    block_d: int = _PROJECT_BLOCK_D,
    block_s: int = _PROJECT_BLOCK_S,
    transposed_copy: bool | None = None,
) -> torch.Tensor:
    """Voxel-driven sum projection. ``(N, D, H, W)`` → ``(N, p, D, S)``. Deterministic (a gather).

    ``transposed_copy``: read the views with ``|cos θ| ≥ |sin θ|`` from an ``(N, D, W, H)`` copy, for
    coalesced loads (default: when there are two views or more)."""
    if volume.dtype == torch.float64:
        return reference.project(volume, angles, detector)
    _check_device(volume)
    volume = volume.contiguous()
    n, depth, height, width = volume.shape
    count = angles.numel()
    out = torch.empty(n, count, depth, detector, dtype=volume.dtype, device=volume.device)
    if out.numel() == 0:
        return out
    cos, sin = _trig(angles, volume.device)
    transposed = _transposed_copy(volume, count, transposed_copy)
    grid = (triton.cdiv(detector, block_s) * count * n * triton.cdiv(depth, block_d),)
    _project_kernel[grid](
        volume, volume if transposed is None else transposed, cos, sin, out, count, depth, height, width, detector,
        **_plane_constants(height, width, detector),
        HAS_TRANSPOSED=transposed is not None, BLOCK_D=block_d, BLOCK_S=block_s,
    )  # fmt: skip
    return out


def backproject(
    views: torch.Tensor,
    angles: torch.Tensor,
    height: int,
    width: int,
    *,
    block_d: int = _BACK_BLOCK_D,
    block_h: int = _BACK_BLOCK_H,
    block_w: int = _BACK_BLOCK_W,
) -> torch.Tensor:
    """Voxel-driven linear back-projection, the transpose of :func:`project`. ``(N, p, D, S)`` →
    ``(N, D, H, W)``. Deterministic (a gather)."""
    if views.dtype == torch.float64:
        return reference.backproject(views, angles, height, width)
    _check_device(views)
    views = views.contiguous()
    n, count, depth, detector = views.shape
    out = torch.empty(n, depth, height, width, dtype=views.dtype, device=views.device)
    if out.numel() == 0:
        return out
    if count == 0:
        return out.zero_()
    cos, sin = _trig(angles, views.device)
    tiles = triton.cdiv(height, block_h) * triton.cdiv(width, block_w)
    grid = (tiles * n * triton.cdiv(depth, block_d),)
    _backproject_kernel[grid](
        views, cos, sin, out, count, depth, height, width, detector,
        **_plane_constants(height, width, detector), BLOCK_D=block_d, BLOCK_H=block_h, BLOCK_W=block_w,
    )  # fmt: skip
    return out


def backproject_explained(
    views: torch.Tensor,
    image_views: torch.Tensor,
    image: torch.Tensor,
    angles: torch.Tensor,
    margin: torch.Tensor,
    softness: torch.Tensor,
    height: int,
    width: int,
    *,
    block_d: int = _BACK_BLOCK_D,
    block_h: int = _BACK_BLOCK_H,
    block_w: int = _BACK_BLOCK_W,
) -> torch.Tensor:
    """:func:`vol25d.ops.reference.backproject_explained` fused into the back-projection kernel (one pass
    over the views; the weight is computed in registers). Deterministic (a gather)."""
    if views.dtype == torch.float64:
        return reference.backproject_explained(views, image_views, image, angles, margin, softness, height, width)
    _check_device(views)
    views, image_views, image = views.contiguous(), image_views.contiguous(), image.contiguous()
    n, count, depth, detector = views.shape
    out = torch.empty(n, depth, height, width, dtype=views.dtype, device=views.device)
    if out.numel() == 0:
        return out
    if count == 0:
        return out.zero_()
    cos, sin = _trig(angles, views.device)
    margin = margin.detach().float().contiguous()
    softness = softness.detach().float().contiguous()
    tiles = triton.cdiv(height, block_h) * triton.cdiv(width, block_w)
    grid = (tiles * n * triton.cdiv(depth, block_d),)
    _backproject_explained_kernel[grid](
        views, image_views, image, margin, softness, cos, sin, out, n // image.shape[0], count, depth, height, width,
        detector, **_plane_constants(height, width, detector), BLOCK_D=block_d, BLOCK_H=block_h, BLOCK_W=block_w,
    )  # fmt: skip
    return out


def mip(
    volume: torch.Tensor,
    angles: torch.Tensor,
    detector: int,
    keep_argmax: bool,
    *,
    block_d: int = _MIP_BLOCK_D,
    block_s: int = _MIP_BLOCK_S,
    views_per_program: int = _MIP_VIEWS,
    transposed_copy: bool | None = None,
):
    """Ray-driven maximum intensity projection. ``(N, D, H, W)`` → ``(views (N, p, D, S), argmax | None)``.

    ``argmax`` (``int32``, when ``keep_argmax``) is the index of the winning sample in the ``T`` axis of
    :func:`vol25d.geometry.ray_samples`, ``-1`` for a ray that meets no sample (that ray holds the volume's
    minimum, per ``N``). Deterministic; ties go to the first sample along the ray. ``transposed_copy`` as in
    :func:`project`.
    """
    if volume.dtype == torch.float64:
        return reference.mip(volume, angles, detector, keep_argmax)
    _check_device(volume)
    volume = volume.contiguous()
    n, depth, height, width = volume.shape
    count = angles.numel()
    views = torch.empty(n, count, depth, detector, dtype=volume.dtype, device=volume.device)
    argmax = torch.empty(views.shape, dtype=torch.int32, device=volume.device) if keep_argmax else None
    if views.numel() == 0:
        return views, argmax
    t_first, samples = _sample_axis(height, width)
    cos, sin = _trig(angles, volume.device)
    floor = volume.reshape(n, -1).amin(dim=1).float()
    transposed = _transposed_copy(volume, count, transposed_copy)
    grid = (triton.cdiv(detector, block_s) * triton.cdiv(count, views_per_program) * n * triton.cdiv(depth, block_d),)
    _mip_kernel[grid](
        volume, volume if transposed is None else transposed, cos, sin, floor, views,
        argmax if keep_argmax else views,
        count, depth, height, width, detector,
        **_plane_constants(height, width, detector), t_first=t_first, tol=INSIDE_TOLERANCE,
        h_clamp=float(max(height - 2, 0)), w_clamp=float(max(width - 2, 0)),
        h_last=float(height - 1), w_last=float(width - 1), samples=float(samples),
        KEEP_ARGMAX=keep_argmax, HAS_TRANSPOSED=transposed is not None,
        BLOCK_D=block_d, BLOCK_S=block_s, VIEWS=views_per_program,
    )  # fmt: skip
    return views, argmax


def mip_backward(
    grad_views: torch.Tensor,
    argmax: torch.Tensor,
    angles: torch.Tensor,
    height: int,
    width: int,
    *,
    deterministic: bool | None = None,
    block_d: int = _MIP_BLOCK_D,
    block_s: int = _MIP_BLOCK_S,
) -> torch.Tensor:
    """Gradient of :func:`mip` with respect to the volume. ``(N, p, D, S)`` → ``(N, D, H, W)``.

    By default an atomic scatter (float32, not bit-reproducible); ``deterministic`` (default:
    ``torch.are_deterministic_algorithms_enabled()`` or ``VOL25D_DETERMINISTIC=1``) selects a gather that is.
    """
    if grad_views.dtype == torch.float64:
        return reference.mip_backward(grad_views, argmax, angles, height, width)
    _check_device(grad_views)
    grad_views = grad_views.contiguous()
    argmax = argmax.to(torch.int32).contiguous()
    n, count, depth, detector = grad_views.shape
    if n * depth * height * width == 0 or count == 0:
        return grad_views.new_zeros(n, depth, height, width)
    t_first, _ = _sample_axis(height, width)
    cos, sin = _trig(angles, grad_views.device)
    geometry = dict(
        **_plane_constants(height, width, detector), t_first=t_first,
        h_clamp=float(max(height - 2, 0)), w_clamp=float(max(width - 2, 0)),
    )  # fmt: skip
    if _deterministic(deterministic):
        out = torch.empty(n, depth, height, width, dtype=grad_views.dtype, device=grad_views.device)
        tiles = triton.cdiv(height, _BACK_BLOCK_H) * triton.cdiv(width, _BACK_BLOCK_W)
        grid = (tiles * n * triton.cdiv(depth, _BACK_BLOCK_D),)
        _mip_backward_gather_kernel[grid](
            grad_views, argmax, cos, sin, out, count, depth, height, width, detector, **geometry,
            BLOCK_D=_BACK_BLOCK_D, BLOCK_H=_BACK_BLOCK_H, BLOCK_W=_BACK_BLOCK_W,
        )  # fmt: skip
        return out
    grad = torch.zeros(n, depth, height, width, dtype=torch.float32, device=grad_views.device)
    grid = (triton.cdiv(detector, block_s) * count * n * triton.cdiv(depth, block_d),)
    _mip_backward_scatter_kernel[grid](
        grad_views, argmax, cos, sin, grad, count, depth, height, width, detector, **geometry,
        BLOCK_D=block_d, BLOCK_S=block_s,
    )  # fmt: skip
    return grad if grad_views.dtype == torch.float32 else grad.to(grad_views.dtype)

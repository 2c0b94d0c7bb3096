"""The Ram–Lak ramp filter of filtered back-projection, scaled for vol25d's reconstruction ``R = backproject / p``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vol25d.ops._validate import check_views


def ramp_filter(n: int, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """The spatial Ram–Lak kernel for a detector of ``n`` bins, scaled by ``π``.

    Taps ``k = -(n-1) … n-1``: ``h[0] = π/4``, ``h[k] = -1/(π k²)`` for odd ``k``, ``0`` for even ``k ≠ 0`` — the
    band-limited ramp ``|ω|`` on a unit grid times ``π``, so that ``backproject(filter_views(project(x)))/m``
    over ``m`` equally spaced angles in ``[0, π)`` gives back ``x`` (filtered back-projection with the
    model's ``R = backproject / p``).

    Args:
        n: detector size ``S`` (the kernel reaches across the whole detector).

    Returns:
        ``(2n - 1,)`` kernel, centre tap at index ``n - 1``.

    Example:
        >>> ramp_filter(3)
        tensor([ 0.0000, -0.3183,  0.7854, -0.3183,  0.0000])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer ≥ 1 (the detector size); got {n!r}")
    k = torch.arange(-(n - 1), n, dtype=torch.float64)
    kernel = torch.zeros_like(k)
    odd = k.remainder(2) == 1
    kernel[odd] = -1.0 / (math.pi * k[odd] ** 2)
    kernel[n - 1] = math.pi / 4
    return kernel.to(dtype=dtype, device=device)


def filter_views(views: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve every view along its detector axis ``S`` with ``kernel`` (zero outside the detector).

    Args:
        views: ``(B, C, p, D, S)``.
        kernel: ``(K,)`` with ``K`` odd, shared by all channels, or ``(C, K)`` one kernel per channel.

    Returns:
        Filtered views, same shape as ``views``.
    """
    check_views(views)
    batch, channels, count, depth, detector = views.shape
    if kernel.dim() == 1:
        kernel = kernel.expand(channels, -1)
    if kernel.dim() != 2 or kernel.shape[0] != channels or kernel.shape[1] % 2 == 0:
        raise ValueError(
            f"kernel must be (K,) or ({channels}, K) with K odd; got {tuple(kernel.shape)}"
        )
    if views.device.type == "cpu" and kernel.shape[1] <= SHIFTED_TAPS:
        return _filter_by_shifts(views, kernel)
    return _filter_by_conv(views, kernel)


# Kernels up to this many taps are applied on the CPU as a sum of shifted, weighted copies of the views: for
# F's default 17 taps on 8 views of 128 × 182, forward and backward 35 → 7 ms on one thread, where
# ``conv1d`` of a single channel takes oneDNN's slow path. Longer kernels (Ram–Lak's 193) use ``conv1d``.
SHIFTED_TAPS = 33


def _filter_by_conv(views: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`filter_views` as a grouped ``conv1d`` along the detector (``kernel`` ``(C, K)``)."""
    batch, channels, count, depth, detector = views.shape
    taps = kernel.shape[1]
    rows = views.permute(0, 2, 3, 1, 4).reshape(-1, channels, detector)
    # conv1d is a correlation; the Ram–Lak kernel is symmetric, but a learnt one need not be: flip it.
    # With an odd kernel and padding taps // 2 the output keeps the detector's length, however long the kernel.
    out = F.conv1d(rows, kernel.flip(-1).unsqueeze(1).to(views.dtype), padding=taps // 2, groups=channels)
    return out.reshape(batch, count, depth, channels, detector).permute(0, 3, 1, 2, 4)


def _filter_by_shifts(views: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """:func:`filter_views` as ``Σ_t kernel[K - 1 - t] · views shifted by t - K // 2`` (zero outside)."""
    detector, taps = views.shape[-1], kernel.shape[1]
    padded = F.pad(views, (taps // 2, taps // 2))
    weights = kernel.flip(-1).to(views.dtype).view(1, kernel.shape[0], 1, 1, taps)
    out = padded[..., :detector] * weights[..., 0:1]
    for t in range(1, taps):
        out = out + padded[..., t : t + detector] * weights[..., t : t + 1]
    return out

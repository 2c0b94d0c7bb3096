"""A picture to judge a segmentation by: MIPs of the image from a few angles with the predicted mask
overlaid, and three orthogonal slices through the mask."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from vol25d.data.orientation import to_canonical
from vol25d.files import atomic_path
from vol25d.io import Volume
from vol25d.ops import mip

_ANGLES_DEG = (0, 45, 90, 135)


def _normalise(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1, 99.5))
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def write_report(image: Volume, probabilities: np.ndarray, path: str | Path, threshold: float = 0.5,
                 rotation_axis: str = "SI") -> Path:
    """Write a PNG: top row MIPs of the image at 0°, 45°, 90°, 135° about the rotation axis with the MIP of
    the mask in colour; bottom row slices across ``D``, ``H`` and ``W`` through the mask's centre (axial,
    coronal and sagittal for the ``"SI"`` axis).

    Args:
        image: the input image (its first channel is shown).
        probabilities: ``(X, Y, Z, K)`` on the image's grid.
        path: the PNG to write (atomically).
        threshold: probability from which a voxel is shown as mask.
        rotation_axis: the model's rotation axis (its preprocessing's), about which the views turn.

    Uses matplotlib's object interface (no pyplot), so a notebook's own plotting backend is left as it is.
    """
    from matplotlib.figure import Figure  # slow to import; only where a report is asked for

    array = image.array if image.array.ndim == 3 else image.array[..., 0]
    volume, spacing, _ = to_canonical(array.astype(np.float32), image.affine, rotation_axis)
    masks, _, _ = to_canonical((probabilities >= threshold).astype(np.float32), image.affine, rotation_axis)
    mask = masks.max(axis=0)  # (K, D, H, W) → any class
    angles = torch.tensor([math.radians(a) for a in _ANGLES_DEG])
    views = mip(torch.from_numpy(np.ascontiguousarray(volume))[None, None], angles)[0, 0].numpy()
    mask_views = mip(torch.from_numpy(np.ascontiguousarray(mask))[None, None], angles)[0, 0].numpy()
    aspect = spacing[0] / spacing[1]  # D against the in-plane spacing

    fig = Figure(figsize=(16, 8))
    axes = fig.subplots(2, 4)
    for ax, view, mask_view, angle in zip(axes[0], views, mask_views, _ANGLES_DEG):
        ax.imshow(_normalise(view), cmap="gray", origin="lower", aspect=aspect)
        ax.imshow(np.ma.masked_where(mask_view < 0.5, np.ones_like(mask_view)), cmap="autumn", vmin=0, vmax=1,
                  alpha=0.6, origin="lower", aspect=aspect)
        ax.set_title(f"MIP {angle}°")
    centre = [int(round(c.mean())) for c in np.nonzero(mask)] if mask.any() else [n // 2 for n in mask.shape]
    titles = ("axial", "coronal", "sagittal") if rotation_axis == "SI" else ("across D", "across H", "across W")
    slices = [
        (titles[0], volume[centre[0]], mask[centre[0]], 1.0),
        (titles[1], volume[:, centre[1]], mask[:, centre[1]], aspect),
        (titles[2], volume[:, :, centre[2]], mask[:, :, centre[2]], aspect),
    ]
    for ax, (title, plane, plane_mask, ratio) in zip(axes[1], slices):
        ax.imshow(_normalise(plane), cmap="gray", origin="lower", aspect=ratio)
        ax.imshow(np.ma.masked_where(plane_mask < 0.5, np.ones_like(plane_mask)), cmap="autumn", vmin=0, vmax=1,
                  alpha=0.5, origin="lower", aspect=ratio)
        ax.set_title(title)
    axes[1, 3].axis("off")
    axes[1, 3].text(0.0, 0.5, f"{image.path.name if image.path else 'image'}\nmask: {int(mask.sum())} voxels "
                    f"(threshold {threshold})", fontsize=11, va="center")
    for ax in axes.ravel()[:7]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=80)
    return path

"""Synthetic GI-tract-like abdominal MRI phantoms: three overlapping organ classes (a multi-label dataset).

The UW-Madison GI-tract competition's volumes are axial MR slices of 3 mm, in-plane 266×266 or 360×310
pixels of about 1.5 mm, labelled large bowel, small bowel and stomach, whose masks may overlap. A phantom
here is an elliptic abdomen of soft tissue inside a bright subcutaneous fat ring (fat is brighter than the
organs, as in the competition's T2-like images: the organs are *not* the brightest thing along a ray), with:

- a colon (large bowel) framing the abdomen: ascending on one side, transverse across the top, descending
  on the other side and a sigmoid loop down to the pelvis, a tube of 2–2.8 cm diameter, dark with bright
  fluid pockets;
- a small bowel tangled in the middle: a random walk of a 1.6–2.2 cm tube, 1–1.5 m long, folding back on
  itself in a box below the transverse colon;
- a stomach: a deformed blob high on the left, bright with fluid.

The classes are rendered independently, so where two tubes cross both labels are set (overlap), and the
image takes the brighter of the two. Bias field and Rician noise on top. Pure numpy/scipy, driven by one
``numpy.random.Generator``.

Example:
    >>> image, label, affine = make_gi_phantom((64, 64, 24), seed=0)
    >>> image.shape, label.shape, label.dtype
    ((64, 64, 24), (64, 64, 24, 3), dtype('uint8'))
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from vol25d.data.phantom import _bias_field, _rician, _smooth_noise

__all__ = ["make_gi_phantom", "write_gi_phantom_dataset", "GI_CLASSES", "GI_SIZES"]

log = logging.getLogger(__name__)

GI_CLASSES = ("large_bowel", "small_bowel", "stomach")
GI_SIZES = ((266, 266), (360, 310))  # the competition's in-plane sizes (W, H) in pixels, about 1.5 mm each
_SLICE_MM = 3.0


def _tube(shape, spacing, points: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean mask of the voxels within ``radius_mm`` of the polyline through ``points`` (voxel coords)."""
    centre = np.zeros(shape, dtype=bool)
    for a, b in zip(points[:-1], points[1:]):
        steps = int(np.ceil(np.abs(b - a).max() * 2)) + 1
        for t in np.linspace(0.0, 1.0, steps):
            index = np.rint(a + t * (b - a)).astype(int)
            if np.all(index >= 0) and np.all(index < shape):
                centre[tuple(index)] = True
    return ndimage.distance_transform_edt(~centre, sampling=spacing) <= radius_mm


def _colon_path(rng: np.random.Generator, shape, box) -> np.ndarray:
    """A frame around the abdomen's middle: up one side, across the top, down the other, a sigmoid loop."""
    (x0, x1), (y0, y1), (z0, z1) = box
    jitter = lambda scale: rng.uniform(-scale, scale)  # noqa: E731
    right, left = x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0)
    front = y0 + 0.35 * (y1 - y0)
    low, high = z0 + 0.2 * (z1 - z0), z1 - 0.12 * (z1 - z0)
    anchors = [
        (right, front + jitter(3), low), (right + jitter(2), front, high),  # ascending
        ((right + left) / 2, y0 + 0.25 * (y1 - y0) + jitter(3), high + jitter(1)),  # transverse, sagging
        (left + jitter(2), front, high), (left, front + jitter(3), low),  # descending
        ((right + left) / 2 + jitter(4), y0 + 0.55 * (y1 - y0), z0 + 0.05 * (z1 - z0)),  # sigmoid
    ]
    points = np.array(anchors)
    fine = np.concatenate([np.linspace(a, b, 12, endpoint=False) for a, b in zip(points[:-1], points[1:])] + [points[-1:]])
    return np.clip(fine, 0, np.asarray(shape) - 1)


def _small_bowel_path(rng: np.random.Generator, shape, box, spacing, steps: int) -> np.ndarray:
    """A tangled random walk confined to the inner box, steps of about 5 mm with a persistent direction."""
    low = np.array([b[0] for b in box], dtype=float)
    high = np.array([b[1] for b in box], dtype=float)
    position = low + (high - low) * rng.uniform(0.3, 0.7, size=3)
    direction = rng.normal(size=3)
    step_vox = 5.0 / np.asarray(spacing)
    points = [position.copy()]
    for _ in range(steps):
        direction = direction / np.linalg.norm(direction) + 0.7 * rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        nxt = position + direction * step_vox
        outside = (nxt < low) | (nxt > high)
        direction[outside] *= -1  # fold back at the walls: the loops pile up
        position = np.clip(position + direction * step_vox, low, high)
        points.append(position.copy())
    return np.array(points)


def _grid(
    rng: np.random.Generator, size: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """:func:`make_gi_phantom`'s shape and spacing: the given ones, checked, or drawn like the competition's."""
    if size is None:
        width, height = GI_SIZES[int(rng.integers(len(GI_SIZES)))]
        size = (width, height, int(rng.integers(70, 100)))
    shape = tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be three ints (X, Y, Z), each ≥ 16; got {size!r}")
    if spacing is None:
        in_plane = max(1.5, 400.0 / max(shape[0], shape[1])) * rng.uniform(0.95, 1.05)
        spacing = (in_plane, in_plane, _SLICE_MM)
    return shape, tuple(float(s) for s in spacing)  # type: ignore[return-value]


def _stomach(rng: np.random.Generator, grid: list[np.ndarray], spacing, centre: np.ndarray) -> np.ndarray:
    """A deformed ellipsoid of 8–12 cm around ``centre`` (voxel coordinates); ``grid`` spans [-1, 1] per axis."""
    shape = grid[0].shape
    axes_mm = rng.uniform([40, 30, 35], [60, 45, 55])
    offsets = [(grid[i] + 1) / 2 * (shape[i] - 1) - centre[i] for i in range(3)]
    wobble = 1.0 + 0.25 * _smooth_noise(rng, shape, 10)
    return sum((offsets[i] * spacing[i] / axes_mm[i]) ** 2 for i in range(3)) <= wobble


def _paint_organs(
    rng: np.random.Generator, image: np.ndarray, organs: dict, inner: np.ndarray, texture: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each class of :data:`GI_CLASSES` (``organs[name] = (mask, level, spread)``) cut to ``inner`` and painted
    into ``image`` with fluid pockets; returns the image and the ``(X, Y, Z, classes)`` label."""
    label = np.zeros((*image.shape, len(GI_CLASSES)), dtype=np.uint8)
    for c, name in enumerate(GI_CLASSES):
        mask, level, spread = organs[name]
        mask &= inner
        label[..., c] = mask
        content = level + spread * (_smooth_noise(rng, image.shape, 5) > 0.4) + 0.05 * texture  # fluid pockets
        # Where an earlier class is there too (an overlap) the brighter content shows.
        image = np.where(mask, np.where(label[..., :c].any(-1), np.maximum(image, content), content), image)
        image = image.astype(np.float32)
    return image, label


def make_gi_phantom(
    size: tuple[int, int, int] | None = None,
    seed: int = 0,
    *,
    spacing: tuple[float, float, float] | None = None,
    noise: float = 0.03,
    bias: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One GI-tract-like abdominal volume and its three-class label, in file voxel order ``(X, Y, Z)``.

    Args:
        size: ``(X, Y, Z)`` voxels, each at least 16; default one of the competition's in-plane sizes
            (266×266 or 360×310) with 3 mm slices over 20–30 cm.
        seed: seed of the random generator.
        spacing: voxel size in mm; default 3 mm slices and about 1.5 mm in-plane (coarser for small sizes, so
            that the field of view is at least an abdomen's 40 cm).
        noise, bias: Rician noise (relative to the fat's brightness ≈ 1) and bias-field strength.

    Returns:
        ``(image, label, affine)``: float32 image ``(X, Y, Z)``; uint8 label ``(X, Y, Z, 3)``, one channel per
        class of :data:`GI_CLASSES`, classes may overlap; float64 voxel → RAS affine (axis-aligned, LPS-like
        in-plane flips as the competition's DICOM-derived volumes).
    """
    rng = np.random.default_rng(seed)
    shape, spacing = _grid(rng, size, spacing)
    grid = np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape), indexing="ij")
    ax, ay = rng.uniform(0.8, 0.92), rng.uniform(0.62, 0.75)
    radius = np.sqrt((grid[0] / ax) ** 2 + (grid[1] / ay) ** 2)
    body = radius <= 1.0
    inner = radius <= rng.uniform(0.82, 0.88)
    texture = _smooth_noise(rng, shape, 6)
    image = np.where(inner, 0.35 + 0.06 * texture, np.where(body, 0.95 + 0.05 * texture, 0.0)).astype(np.float32)
    # The inner box, where the organs live (voxel coordinates).
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    half_x, half_y = 0.75 * ax * cx, 0.7 * ay * cy
    box = ((cx - half_x, cx + half_x), (cy - half_y, cy + half_y), (0.05 * shape[2], 0.95 * shape[2]))
    colon = _tube(shape, spacing, _colon_path(rng, shape, box), rng.uniform(10.0, 14.0))
    small_box = ((cx - 0.55 * half_x, cx + 0.55 * half_x), (cy - 0.2 * half_y, cy + 0.8 * half_y),
                 (0.1 * shape[2], 0.7 * shape[2]))
    small = _tube(shape, spacing, _small_bowel_path(rng, shape, small_box, spacing, int(rng.integers(200, 300))),
                  rng.uniform(8.0, 11.0))
    stomach = _stomach(rng, grid, spacing, np.array([cx + 0.45 * half_x, cy - 0.35 * half_y, 0.8 * shape[2]]))
    organs = {"large_bowel": (colon, 0.25, 0.6), "small_bowel": (small, 0.55, 0.2), "stomach": (stomach, 0.7, 0.2)}
    image, label = _paint_organs(rng, image, organs, inner, texture)
    image = image * _bias_field(rng, shape, bias)
    image = _rician(rng, image, noise)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = rng.uniform(-200.0, 200.0, size=3)
    return image.astype(np.float32), label, affine


def write_gi_phantom_dataset(out_dir: str | Path, n: int, size: tuple[int, int, int] | None, seed: int) -> Path:
    """Write ``n`` GI-tract-like phantoms in the MSD layout as a multi-label dataset (``labelsTr`` 4-D
    ``(X, Y, Z, 3)`` uint8, ``"multi_label": true``) and return the folder. Case ``i`` uses seed
    ``SeedSequence([seed, i, 0x61])``."""
    from vol25d.io import Volume, write_volume

    if n < 1:
        raise ValueError(f"n (number of phantoms) must be ≥ 1; got {n}")
    root = Path(out_dir)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        case_seed = int(np.random.SeedSequence([seed, i, 0x61]).generate_state(1)[0])
        image, label, affine = make_gi_phantom(size, case_seed)
        name = f"gi_{i:03d}"
        write_volume(Volume(image, affine), root / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(Volume(label, affine), root / "labelsTr" / f"{name}.nii.gz")
    info = {
        "name": "vol25d_gi_phantoms",
        "description": f"GI-tract-like abdominal phantoms from vol25d.data.gi_phantom (size {size}, seed {seed})",
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, **{name: i + 1 for i, name in enumerate(GI_CLASSES)}},
        "numTraining": n,
        "file_ending": ".nii.gz",
        "multi_label": True,
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("wrote %d GI-tract-like phantoms to %s", n, root)
    return root

"""A third, independent generator of MRA-like phantoms: sparse random tubes whose label is the tube itself.

Written without any code of ``vol25d/data/phantom.py`` or ``experiments/other_phantoms.py``, and unlike both
of them in what makes a phantom hard:

- Geometry: a few (2–3) thick trunks enter through random faces and wander (a random walk with momentum,
  0.5-voxel steps) across the volume; every trunk sprouts side branches, which sprout again, each thinner
  (0.55–0.8 of its parent's radius) down to 0.7 voxel (at 48³; times the square root of the grid's scale
  beyond). Trunk radii are 1.4–2.6 voxels at 48³ (scaled with the grid): no sub-voxel twigs, few crossings,
  so a view shows most vessels apart.
- Rendering: the signed distance to the nearest tube surface, ``sd``, through an erfc edge of a Gaussian
  point spread (σ 0.5 voxel): the label is ``sd ≤ 0``, which is where the clean vessel signal is half its
  brightness. Each tube has its own brightness (0.55–1 of the brightest), so a voxel's intensity, read
  beside its tube's, says whether it is inside.
- Contrast: float32 in arbitrary units: tissue 150–300 with a smooth texture, vessels 600–1000 above it, a
  smooth multiplicative bias (exp of a random quadratic in the coordinates, 9 coefficients in ±0.12),
  additive Gaussian noise of σ 10–30.
- Header: isotropic voxels of 0.5–0.9 mm, axes flipped at random (RAS or LPS-like), origin anywhere.

Usage:
    python experiments/tube_phantoms.py OUT [--n 16] [--size 48] [--seed 0]

API:
    make_tube_phantom(size, seed) -> (image float32 (X, Y, Z), label uint8 (X, Y, Z), affine float64 (4, 4))
    write_tube_dataset(out_dir, n, size, seed) -> Path   (nnU-Net/MSD layout, as vol25d's make-phantoms)
    tube_seed(dataset_seed, index) -> int               (the seed of one case of such a dataset)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import erfc

__all__ = ["make_tube_phantom", "write_tube_dataset", "tube_seed"]

_PSF_SIGMA = 0.5  # voxels
_R_MIN = 0.7  # voxels: no branch thinner than this
_STEP = 0.5  # voxels between centreline samples


def make_tube_phantom(size: int | tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom: ``(image, label, affine)`` in file voxel order ``(X, Y, Z)``; the same seed gives the
    same arrays. ``size``: voxels per axis (or one int for a cube), each at least 16."""
    shape = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be one int or three ints, each at least 16; got {size!r}")
    rng = np.random.default_rng(seed)
    scale = min(shape) / 48.0
    points, radii, brightness = _tubes(rng, np.asarray(shape, dtype=float), scale)
    distance, bright = _signed_distance(shape, points, radii, brightness)
    label = (distance <= 0).astype(np.uint8)
    vessel = 0.5 * erfc(distance / (np.sqrt(2.0) * _PSF_SIGMA)) * bright
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 4.0 * scale)
    tissue = rng.uniform(150, 300) * (1 + 0.15 * texture / (texture.std() + 1e-9))
    contrast = rng.uniform(600, 1000)
    clean = tissue * (1 - vessel) + (tissue + contrast) * vessel
    quadratic = sum(rng.uniform(-0.12, 0.12) * grid[a] * grid[b] for a in range(3) for b in range(a, 3))
    linear = sum(rng.uniform(-0.12, 0.12) * grid[a] for a in range(3))
    image = clean * np.exp(linear + quadratic) + rng.normal(0, rng.uniform(10, 30), shape)
    spacing = rng.uniform(0.5, 0.9)
    signs = np.where(rng.random(3) < 0.5, -1.0, 1.0)
    affine = np.diag([*(signs * spacing), 1.0])
    affine[:3, 3] = rng.uniform(-80, 80, 3)
    return image.astype(np.float32), label, affine


def tube_seed(dataset_seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset written with ``dataset_seed`` (unrelated cases for nearby seeds)."""
    return int(np.random.SeedSequence(entropy=[0x7B3E, dataset_seed], spawn_key=(index,)).generate_state(1)[0])


def write_tube_dataset(out_dir: str | Path, n: int, size: int | tuple[int, int, int], seed: int) -> Path:
    """Write ``n`` cases in the nnU-Net/MSD layout (``imagesTr/tube_XXX_0000.nii.gz``,
    ``labelsTr/tube_XXX.nii.gz``, ``dataset.json``) and return the folder."""
    from vol25d.io import Volume, write_volume

    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    root = Path(out_dir)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for path in (root / folder).glob("tube_*"):
            path.unlink()
    for i in range(n):
        image, label, affine = make_tube_phantom(size, tube_seed(seed, i))
        write_volume(Volume(image, affine), root / "imagesTr" / f"tube_{i:03d}_0000.nii.gz")
        write_volume(Volume(label, affine), root / "labelsTr" / f"tube_{i:03d}.nii.gz")
    info = {"name": "tube_phantoms",
            "description": f"Sparse random-tube MRA-like phantoms from experiments/tube_phantoms.py (size {size}, "
                           f"seed {seed}).",
            "channel_names": {"0": "MRA"}, "labels": {"background": 0, "vessel": 1}, "numTraining": n,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


def _tubes(rng: np.random.Generator, shape: np.ndarray, scale: float):
    """Centreline samples ``(N, 3)``, their radii and their tube's brightness, all in voxels."""
    points, radii, brightness = [], [], []
    queue = []
    for _ in range(int(rng.integers(2, 4))):
        axis, side = int(rng.integers(3)), int(rng.integers(2))
        start = rng.uniform(0.2, 0.8, 3) * (shape - 1)
        start[axis] = side * (shape[axis] - 1)
        heading = rng.normal(0, 0.4, 3)
        heading[axis] = 1.0 if side == 0 else -1.0
        queue.append((start, heading, rng.uniform(1.4, 2.6) * scale, 0))
    while queue:
        position, heading, radius, depth = queue.pop()
        heading = heading / np.linalg.norm(heading)
        length = rng.uniform(0.5, 1.1) * shape.min() * (0.7 ** depth)
        tone = rng.uniform(0.55, 1.0)
        taper = rng.uniform(0.75, 1.0)
        steps = int(length / _STEP)
        for i in range(steps):
            heading = heading + rng.normal(0, 0.12, 3)
            heading /= np.linalg.norm(heading)
            position = position + _STEP * heading
            if np.any(position < -2) or np.any(position > shape + 1):
                break
            r = radius * (1 - (1 - taper) * i / max(steps, 1))
            points.append(position.copy())
            radii.append(r)
            brightness.append(tone)
            if i > 4 and depth < 3 and rng.random() < 0.03 / (1 + depth):
                child = r * rng.uniform(0.55, 0.8)
                if child >= _R_MIN * scale ** 0.5:
                    side = np.cross(heading, rng.normal(size=3))
                    queue.append((position.copy(), heading + 1.5 * side / (np.linalg.norm(side) + 1e-9), child,
                                  depth + 1))
    return np.asarray(points), np.asarray(radii), np.asarray(brightness)


def _signed_distance(shape, points, radii, brightness):
    """Per voxel: the least ``|v - c| - r`` over centreline samples, and the brightness of that sample."""
    distance = np.full(shape, 1e3, dtype=np.float32)
    bright = np.zeros(shape, dtype=np.float32)
    reach = 3.0
    for c, r, b in zip(points, radii, brightness):
        lo = np.maximum(np.floor(c - r - reach).astype(int), 0)
        hi = np.minimum(np.ceil(c + r + reach).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        axes = [np.arange(lo[a], hi[a]) for a in range(3)]
        d = np.sqrt(sum(np.square(g - c[a]) for a, g in
                        enumerate(np.meshgrid(*axes, indexing="ij")))).astype(np.float32) - r
        box = tuple(slice(lo[a], hi[a]) for a in range(3))
        closer = d < distance[box]
        distance[box] = np.where(closer, d, distance[box])
        bright[box] = np.where(closer, b, bright[box])
    return distance, bright


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from other_phantoms import dataset_script  # the same command line; none of its phantom code

    return dataset_script(write_tube_dataset, __doc__, argv, default_n=16)


if __name__ == "__main__":
    sys.exit(main())

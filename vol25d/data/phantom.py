"""Synthetic TOF-MRA-like phantoms: the embedded default dataset (no download needed).

A phantom is a head-like ellipsoid of textured tissue wrapped in a bright fat-like shell, holding several
branching, tortuous vessel trees whose radii run from a few voxels at the roots down to sub-voxel at the
tips. Vessels are rendered with partial volume (an anti-aliased tube profile), then the whole image gets a
smooth multiplicative bias field and Rician noise. The grid has anisotropic spacing (in-plane ≈ 0.5–0.6 mm,
slices ≈ 0.7–0.9 mm) and a non-identity affine (small rotation, sign flips, origin offset), so the
reorientation and resampling code is exercised just as with real scans.

Everything is pure numpy/scipy and driven by one ``numpy.random.Generator``: the same seed gives
bit-identical arrays on the same platform.

Example:
    >>> image, label, affine = make_phantom(32, seed=0)
    >>> image.shape, image.dtype, label.dtype
    ((32, 32, 32), dtype('float32'), dtype('uint8'))
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from pathlib import Path

import numpy as np
from scipy.special import expit

__all__ = ["make_phantom", "write_phantom_dataset", "phantom_seed"]

log = logging.getLogger(__name__)

_VESSEL_BRIGHTNESS = (0.85, 1.0)  # TOF: inflowing blood is the brightest thing in the head ...
# ... with fat behind it: bright enough to show in every MIP, dimmer than the arteries. At 0.7 (with a ±25 %
# bias field) the shell won 60–67 % of the rays that cross a vessel, hiding most of the tree from any MIP,
# which a clinical TOF MIP does not do; at 0.5 with ±15 % vessels win 80–87 % of them.
_SHELL_BRIGHTNESS = 0.5
_TISSUE_BRIGHTNESS = 0.3
_PHANTOM_FILE = re.compile(r"^phantom_(?P<index>\d{3,})(_0000)?\.nii\.gz$")
_MAX_SPLAT = 400_000  # voxel-offset pairs per rendering chunk (bounds the temporary memory)
LAYOUTS = ("tangle", "spread", "mixed")  # make_phantom's tree layouts


def make_phantom(
    size: int | tuple[int, int, int],
    seed: int,
    *,
    spacing: tuple[float, float, float] | None = None,
    n_trees: int | None = None,
    vessel_fraction: float | None = None,
    noise: float = 0.03,
    bias: float = 0.15,
    layout: str = "tangle",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic TOF-MRA-like volume and its vessel label, in file voxel order ``(X, Y, Z)``.

    Args:
        size: voxels per axis ``(X, Y, Z)``, or one int for a cube; each at least 16.
        seed: seed of the random generator; the same seed gives bit-identical outputs.
        spacing: voxel size in mm ``(sx, sy, sz)``; default random per case with ``sx = sy`` in
            ``[0.5, 0.6]`` and ``sz`` in ``[0.7, 0.9]`` (slices thicker than the in-plane voxel).
        n_trees: number of vessel trees (roots); default random in ``[3, 6]``.
        vessel_fraction: target fraction of the grid's volume inside vessel tubes (before overlaps);
            default random in ``[0.005, 0.01]``. Trees stop growing once it is reached. The label's
            fraction comes out somewhat higher (centrelines of sub-voxel vessels are labelled whole).
        noise: standard deviation of the complex Gaussian noise behind the Rician noise, relative to the
            vessel brightness (≈ 1).
        bias: strength of the multiplicative bias field (its log spans about ``±bias``).
        layout: how the trees fill the head (see :data:`LAYOUTS`): ``"tangle"`` (long branches reflecting off
            the wall: dense tangles in the middle of the head), ``"spread"`` (every branch steers towards its
            own target drawn over the whole head, near-surface included, roots enter low; the head's size and
            position vary more) or ``"mixed"`` (one of the two per case, each with probability ½).

    Returns:
        ``(image, label, affine)``:

        - ``image``: float32 ``(X, Y, Z)``; before bias and noise, air 0, tissue ≈ 0.3, shell ≈ 0.5, thick
          vessels ≈ 0.9–1 and sub-voxel vessels dimmer.
        - ``label``: uint8 ``(X, Y, Z)``, 1 where a voxel centre lies within a vessel's radius or on the
          centreline of a sub-voxel vessel, else 0.
        - ``affine``: float64 ``(4, 4)``, voxel → RAS mm.

    Raises:
        ValueError: ``size`` has a side under 16, ``spacing``, ``n_trees`` or ``vessel_fraction`` is not
            positive, ``noise``/``bias`` is negative, or ``layout`` is not one of :data:`LAYOUTS`.
    """
    shape = _as_shape(size)
    if noise < 0 or bias < 0:
        raise ValueError(f"noise and bias must be ≥ 0; got noise={noise}, bias={bias}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    rng = np.random.default_rng(seed)
    if layout == "mixed":  # the one extra draw comes first, so "tangle" and "spread" keep their own streams
        layout = "spread" if rng.random() < 0.5 else "tangle"
    spacing_mm, n_trees, vessel_fraction = _case_settings(rng, spacing, n_trees, vessel_fraction)
    extent_mm = np.asarray(shape) * spacing_mm
    centre_mm = (np.asarray(shape) - 1) / 2 * spacing_mm
    if layout == "spread":  # a head of varied size, off the grid's centre
        head_axes = extent_mm * rng.uniform(0.38, 0.48, size=3)
        centre_mm = centre_mm + rng.uniform(-1.0, 1.0, size=3) * np.maximum(0.48 * extent_mm - head_axes, 0.0)
    else:
        head_axes = extent_mm * rng.uniform(0.40, 0.44, size=3)  # the skin's semi-axes
    shell_mm = max((1.5 if layout == "spread" else 2.5) * spacing_mm.max(), 0.04 * extent_mm.min())

    margin_mm = (0.5 if layout == "spread" else 2.0) * spacing_mm.max()  # "spread" reaches the shell
    vessel_axes = np.maximum(head_axes - shell_mm - margin_mm, 0.5 * head_axes)  # inside the shell
    points, radii, brightness = _vessel_trees(
        rng, shape, spacing_mm, centre_mm, vessel_axes, n_trees, vessel_fraction * float(np.prod(extent_mm)),
        steer=layout == "spread",
    )
    vessel, label = _render_tubes(shape, spacing_mm, points, radii, brightness)

    tissue, shell = _head(rng, shape, spacing_mm, centre_mm, head_axes, shell_mm)
    clean = tissue + shell + vessel * (1.0 - tissue - shell)  # partial volume: vessel replaces tissue
    clean *= _bias_field(rng, shape, bias)
    image = _rician(rng, clean, noise)
    affine = _random_affine(rng, shape, spacing_mm)
    return image, label, affine


def write_phantom_dataset(
    out_dir: str | Path, n: int, size: int | tuple[int, int, int], seed: int, *, layout: str = "tangle"
) -> Path:
    """Write ``n`` phantoms in the nnU-Net/MSD layout and return the dataset folder.

    Writes ``imagesTr/phantom_XXX_0000.nii.gz`` (float32), ``labelsTr/phantom_XXX.nii.gz`` (uint8) and
    ``dataset.json``. Case ``i`` uses the seed :func:`phantom_seed` ``(seed, i)``, so the same arguments give
    the same bytes (nibabel writes gzip with ``mtime = 0`` and no file name in the header), and datasets with
    different seeds share no case.

    Args:
        out_dir: the dataset folder to create or refill. Phantom files already there are overwritten, and
            those of cases ``≥ n`` (from an earlier, larger run) are deleted so the folder stays consistent.
        n: number of cases, at least 1.
        size: voxels per axis, as in :func:`make_phantom`.
        seed: dataset seed.
        layout: the trees' layout, as in :func:`make_phantom` (``"mixed"`` draws it per case).

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: ``n < 1``, a bad ``size`` or an unknown ``layout``.
    """
    from vol25d.io import Volume, write_volume  # the file-format libraries load only when writing

    if n < 1:
        raise ValueError(f"n (number of phantoms) must be ≥ 1; got {n}")
    shape = _as_shape(size)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    root = Path(out_dir)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    stale = [path for folder in ("imagesTr", "labelsTr") for path in sorted((root / folder).glob("phantom_*"))
             if (match := _PHANTOM_FILE.match(path.name)) and int(match["index"]) >= n]
    if stale:
        log.warning("%s: deleting %d phantom files of an earlier, larger run (e.g. %s)", root, len(stale),
                    stale[0].name)
        for path in stale:
            path.unlink()
    for i in range(n):
        name = f"phantom_{i:03d}"
        image, label, affine = make_phantom(shape, phantom_seed(seed, i), layout=layout)
        image_path = root / "imagesTr" / f"{name}_0000.nii.gz"
        label_path = root / "labelsTr" / f"{name}.nii.gz"
        write_volume(Volume(image, affine, image_path), image_path)
        write_volume(Volume(label, affine, label_path), label_path)
        log.debug("wrote %s and %s", image_path, label_path)
    description = (
        f"Synthetic TOF-MRA-like phantoms from vol25d.data.phantom (size {shape}, seed {seed}, layout {layout}): branching "
        "tortuous vessels, textured tissue, a bright fat-like shell, bias field, Rician noise."
    )
    info = {
        "name": "vol25d_phantoms",
        "description": description,
        "channel_names": {"0": "MRA"},
        "labels": {"background": 0, "vessel": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("wrote %d phantoms of size %s to %s", n, shape, root)
    return root


def phantom_seed(dataset_seed: int, index: int) -> int:
    """The :func:`make_phantom` seed of case ``index`` in a dataset written with ``dataset_seed``.

    Derived with ``numpy.random.SeedSequence``, so nearby dataset seeds give unrelated cases.
    """
    return int(np.random.SeedSequence([dataset_seed, index]).generate_state(1)[0])


def _case_settings(
    rng: np.random.Generator,
    spacing: tuple[float, float, float] | None,
    n_trees: int | None,
    vessel_fraction: float | None,
) -> tuple[np.ndarray, int, float]:
    """:func:`make_phantom`'s spacing, tree count and vessel fraction: the given ones, checked, or drawn."""
    if spacing is None:
        in_plane = rng.uniform(0.5, 0.6)
        spacing_mm = np.array([in_plane, in_plane, rng.uniform(0.7, 0.9)])
    else:
        spacing_mm = np.asarray(spacing, dtype=np.float64)
        if spacing_mm.shape != (3,) or np.any(spacing_mm <= 0):
            raise ValueError(f"spacing must be three positive numbers in mm; got {spacing!r}")
    if n_trees is None:
        n_trees = int(rng.integers(3, 7))
    if vessel_fraction is None:
        vessel_fraction = float(rng.uniform(0.005, 0.01))
    if n_trees < 1 or not 0.0 < vessel_fraction < 1.0:
        raise ValueError(f"n_trees must be ≥ 1 and vessel_fraction in (0, 1); got {n_trees}, {vessel_fraction}")
    return spacing_mm, n_trees, vessel_fraction


def _as_shape(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    shape = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be an int or three ints (X, Y, Z), each ≥ 16; got {size!r}")
    return shape  # type: ignore[return-value]


class _Draws:
    """Normal and uniform draws from ``rng`` in blocks: the walk takes thousands of small draws."""

    def __init__(self, rng: np.random.Generator, block: int = 4096) -> None:
        self._rng, self._block = rng, block
        self._normal: list[float] = []
        self._uniform: list[float] = []

    def normal(self) -> float:
        if not self._normal:
            self._normal = self._rng.standard_normal(self._block).tolist()
        return self._normal.pop()

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        if not self._uniform:
            self._uniform = self._rng.random(self._block).tolist()
        return low + (high - low) * self._uniform.pop()

    def unit(self) -> list[float]:
        v = [self.normal(), self.normal(), self.normal()]
        n = math.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2) or 1.0
        return [v[0] / n, v[1] / n, v[2] / n]


def _vessel_trees(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing_mm: np.ndarray,
    centre_mm: np.ndarray,
    axes_mm: np.ndarray,
    n_trees: int,
    budget_mm3: float,
    steer: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centreline samples of branching, tortuous trees inside the ellipsoid ``(centre_mm, axes_mm)``.

    Each branch is a persistent random walk whose direction turns with a smoothly varying angular velocity
    (an Ornstein–Uhlenbeck process), so curves are smooth but tortuous; it reflects off the ellipsoid wall,
    thins as it goes and spawns thinner children at 30–80°. Roots sit in the lower part of the head and
    start upward and outward, as arteries enter the skull from below and spread over the brain; branches
    are long (several head radii for a root) so that the trees reach the whole head instead of tangling in
    its middle. Branches grow breadth first (``n_trees`` roots; a new root whenever all branches have
    ended) until the tube volume reaches ``budget_mm3``.
    With ``steer`` (the "spread" layout) every branch also turns towards its own target, drawn uniformly in
    the ellipsoid (a new one when it gets there), and roots start anywhere low in the head: the trees then
    cover the head, its surface included, instead of tangling where the reflections pile them up. Without
    it nothing extra is drawn, so the "tangle" phantoms stay bit-identical.
    Plain Python floats: numpy's per-call overhead would dominate on 3-vectors.

    An algorithm that reads better whole: the walk's state (position, direction, angular velocity,
    radius, the volume used) changes at every step of one hot loop, and the draws must keep their order
    for phantoms to stay bit-identical; helpers would pass all of it back and forth, a call per step.

    Returns:
        ``(points, radii, brightness)``: ``(N, 3)`` positions in mm in the array frame, ``(N,)`` radii in mm,
        ``(N,)`` peak intensities.
    """
    draw = _Draws(rng)
    voxel = float(spacing_mm[0])
    r_min = 0.35 * voxel
    r_root = float(np.clip(min(shape) / 40.0, 1.0, 3.5)) * voxel
    scale = float(axes_mm.min())  # persistence and branch lengths follow the head's size
    cx, cy, cz = (float(v) for v in centre_mm)
    ax, ay, az = (float(v) for v in axes_mm)
    budget = budget_mm3
    used = 0.0

    def inside(x: float, y: float, z: float) -> float:
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2

    def target() -> list[float] | None:
        if not steer:
            return None
        u = draw.unit()  # a direction, and a depth weighted towards the wall (cortical arteries)
        depth = 0.95 - 0.6 * draw.uniform() ** 2
        return [cx + ax * depth * u[0], cy + ay * depth * u[1], cz + az * depth * u[2]]

    def root() -> tuple[list[float], list[float], float, float, list[float] | None]:
        if steer:  # anywhere in the lowest part of the head, heading for its target
            while True:
                p = [cx + ax * draw.uniform(-0.9, 0.9), cy + ay * draw.uniform(-0.9, 0.9),
                     cz - az * draw.uniform(0.5, 0.95)]
                if inside(*p) < 0.9:
                    break
            goal = target()
            d = [goal[0] - p[0], goal[1] - p[1], goal[2] - p[2]]
            norm = math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) or 1.0
            return p, [v / norm for v in d], r_root * draw.uniform(0.6, 1.0), draw.uniform(*_VESSEL_BRIGHTNESS), goal
        # Arteries enter the head from below (low Z) and run up and out towards its surface.
        while True:
            p = [cx + ax * draw.uniform(-0.5, 0.5), cy + ay * draw.uniform(-0.5, 0.5), cz - az * draw.uniform(0.3, 0.75)]
            if inside(*p) < 0.8:
                break
        d = [(p[0] - cx) / ax + 0.4 * draw.normal(), (p[1] - cy) / ay + 0.4 * draw.normal(), 1.0]
        norm = math.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
        return p, [v / norm for v in d], r_root * draw.uniform(0.6, 1.0), draw.uniform(*_VESSEL_BRIGHTNESS), None

    queue = deque(root() for _ in range(n_trees))
    points: list[tuple[float, float, float]] = []
    radii: list[float] = []
    bright: list[float] = []
    low, high = _VESSEL_BRIGHTNESS
    omega_std = (0.3 if steer else 0.6) / scale  # angular velocity, rad/mm (steered branches wander less)
    relax = 1.0 / (0.3 * scale)  # its correlation length is 0.3 · scale
    roots_left = 20 * n_trees  # more roots when the trees end early; bounded, so tiny grids cannot loop
    while used < budget and (queue or roots_left > 0):
        if not queue:
            queue.append(root())
            roots_left -= 1
        (x, y, z), (dx, dy, dz), radius, brightness, goal = queue.popleft()
        wx, wy, wz = draw.normal() * omega_std, draw.normal() * omega_std, draw.normal() * omega_std
        length, max_length = 0.0, draw.uniform(4.0, 8.0) * scale * math.sqrt(radius / r_root)  # twigs are short
        while radius >= r_min and length < max_length and used < budget:
            step = max(0.35 * voxel, 0.3 * radius)  # dense enough that the tube's surface is smooth
            kick = omega_std * math.sqrt(2.0 * step * relax)
            wx += -wx * step * relax + kick * draw.normal()
            wy += -wy * step * relax + kick * draw.normal()
            wz += -wz * step * relax + kick * draw.normal()
            dx, dy, dz = (dx + (wy * dz - wz * dy) * step, dy + (wz * dx - wx * dz) * step,
                          dz + (wx * dy - wy * dx) * step)  # turn by ω × d
            if goal is not None:  # turn towards the target, over about half a head radius
                gx, gy, gz = goal[0] - x, goal[1] - y, goal[2] - z
                gap = math.sqrt(gx * gx + gy * gy + gz * gz)
                if gap < 0.15 * scale:
                    goal = target()
                else:
                    pull = step / (0.3 * scale * gap)
                    dx, dy, dz = dx + pull * gx, dy + pull * gy, dz + pull * gz
            norm = math.sqrt(dx * dx + dy * dy + dz * dz)
            dx, dy, dz = dx / norm, dy / norm, dz / norm
            if inside(x + dx * step, y + dy * step, z + dz * step) > 1.0:  # reflect off the wall
                nx, ny, nz = (x - cx) / ax**2, (y - cy) / ay**2, (z - cz) / az**2
                norm = math.sqrt(nx * nx + ny * ny + nz * nz)
                dot = 2.0 * (dx * nx + dy * ny + dz * nz) / norm
                dx, dy, dz = dx - dot * nx / norm, dy - dot * ny / norm, dz - dot * nz / norm
                if inside(x + dx * step, y + dy * step, z + dz * step) > 1.0:
                    break
            x, y, z = x + dx * step, y + dy * step, z + dz * step
            points.append((x, y, z))
            radii.append(radius)
            bright.append(brightness)
            used += math.pi * radius * radius * step
            length += step
            radius *= math.exp(-step / (3.0 * scale))
            if draw.uniform() < step / scale:  # a thinner child leaves at 30–80°
                child_radius = radius * draw.uniform(0.55, 0.85)
                radius *= draw.uniform(0.85, 0.97)
                if child_radius >= r_min:
                    tx, ty, tz = draw.unit()
                    dot = tx * dx + ty * dy + tz * dz
                    tx, ty, tz = tx - dot * dx, ty - dot * dy, tz - dot * dz
                    norm = math.sqrt(tx * tx + ty * ty + tz * tz) or 1.0
                    angle = draw.uniform(math.radians(30), math.radians(80))
                    c, s = math.cos(angle), math.sin(angle) / norm
                    child = [c * dx + s * tx, c * dy + s * ty, c * dz + s * tz]
                    child_brightness = min(max(brightness * draw.uniform(0.9, 1.05), low), high)
                    queue.append(([x, y, z], child, child_radius, child_brightness, target()))
    if not points:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    return np.asarray(points), np.asarray(radii), np.asarray(bright)


def _render_tubes(
    shape: tuple[int, int, int],
    spacing_mm: np.ndarray,
    points_mm: np.ndarray,
    radii_mm: np.ndarray,
    brightness: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased vessel intensity and the binary label from centreline samples.

    A voxel at distance ``d`` (mm) from a sample of radius ``r`` gets coverage
    ``clip(0.5 + (r - d) / w, 0, 1)`` with ``w`` the mean voxel size (a box-filtered edge: partial volume,
    and a dimmer peak for sub-voxel vessels); the intensity is the maximum of ``coverage · brightness`` over
    samples. The label is ``d ≤ r`` plus the voxel nearest every sample, so sub-voxel vessels keep their
    centreline.

    Returns:
        ``(vessel, label)``: float32 and uint8, both ``shape``.
    """
    vessel = np.zeros(int(np.prod(shape)), dtype=np.float32)
    label = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    if len(points_mm) == 0:
        return vessel.reshape(shape), label.reshape(shape)
    dims = np.asarray(shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    width = float(np.prod(spacing_mm)) ** (1.0 / 3.0)
    centres = points_mm / spacing_mm  # in voxels
    nearest = np.rint(centres).astype(np.int64)
    ok = np.all((nearest >= 0) & (nearest < dims), axis=1)
    label[nearest[ok] @ strides] = 1

    half = np.ceil((radii_mm[:, None] + width) / spacing_mm).astype(np.int64)  # box half-widths per axis
    keys = half @ np.array([10_000, 100, 1])
    for key in np.unique(keys):
        group = np.flatnonzero(keys == key)
        hx, hy, hz = half[group[0]]
        grid = np.stack(np.meshgrid(np.arange(-hx, hx + 1), np.arange(-hy, hy + 1), np.arange(-hz, hz + 1),
                                    indexing="ij"), axis=-1).reshape(-1, 3)
        chunk = max(1, _MAX_SPLAT // len(grid))
        for start in range(0, len(group), chunk):
            sel = group[start:start + chunk]
            voxels = nearest[sel, None, :] + grid[None]  # (n, m, 3)
            dist = np.linalg.norm((voxels - centres[sel, None, :]) * spacing_mm, axis=-1)
            radius = radii_mm[sel, None]
            cover = np.clip(0.5 + (radius - dist) / width, 0.0, 1.0) * brightness[sel, None]
            valid = np.all((voxels >= 0) & (voxels < dims), axis=-1) & (cover > 0)
            flat = voxels[valid] @ strides
            np.maximum.at(vessel, flat, cover[valid].astype(np.float32))
            label[flat[dist[valid] <= np.broadcast_to(radius, dist.shape)[valid]]] = 1
    return vessel.reshape(shape), label.reshape(shape)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise with features about ``cell`` voxels across.

    White noise on a grid ``cell`` times coarser, interpolated to ``shape`` with separable Gaussian weights
    (three small matrix products: much faster than ``ndimage.zoom`` or a full-size Gaussian filter).
    """
    out = rng.standard_normal(tuple(int(math.ceil(n / cell)) + 3 for n in shape)).astype(np.float32)
    for axis, n in enumerate(shape):
        coarse = (np.arange(out.shape[axis]) - 1.5) * cell  # coarse nodes cover the axis with a margin
        fine = np.arange(n, dtype=np.float64)
        weights = np.exp(-0.5 * ((fine[:, None] - coarse[None, :]) / (0.7 * cell)) ** 2)
        weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)


def _head(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing_mm: np.ndarray,
    centre_mm: np.ndarray,
    axes_mm: np.ndarray,
    shell_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Textured tissue inside an ellipsoid and a bright fat-like shell (the skin layer) around it.

    Returns:
        ``(tissue, shell)``: float32 intensity maps of ``shape``, with soft (one-voxel) edges.
    """
    coords = [(np.arange(n) * s - c) / a for n, s, c, a in zip(shape, spacing_mm, centre_mm, axes_mm)]
    radius = np.sqrt(coords[0][:, None, None] ** 2 + coords[1][None, :, None] ** 2
                     + coords[2][None, None, :] ** 2).astype(np.float32)
    edge = 0.5 * float(spacing_mm.min()) / float(axes_mm.min())  # half a voxel, in units of the semi-axis
    inner = 1.0 - shell_mm / float(axes_mm.min())
    head = expit((1.0 - radius) / edge)
    brain = expit((inner - radius) / edge)
    texture = 0.6 * _smooth_noise(rng, shape, 4) + 0.4 * _smooth_noise(rng, shape, 12)
    tissue = brain * (_TISSUE_BRIGHTNESS + 0.05 * texture)
    shell = (head - brain) * (_SHELL_BRIGHTNESS + 0.05 * texture)
    return tissue.astype(np.float32), shell.astype(np.float32)


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(p(x, y, z))`` with ``p`` a random quadratic, ``|p| ≲ strength``."""
    x, y, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    terms = [x, y, z, x * x, y * y, z * z, x * y, y * z, x * z]
    coeffs = rng.uniform(-1.0, 1.0, size=len(terms))
    log_field = sum(float(c) * t for c, t in zip(coeffs, terms))
    log_field = log_field * (strength / (np.abs(log_field).max() + 1e-12))
    return np.exp(log_field).astype(np.float32)


def _rician(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``clean`` plus complex Gaussian noise of std ``sigma`` per component (Rician)."""
    real = clean + rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(clean.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def _random_affine(rng: np.random.Generator, shape: tuple[int, int, int], spacing_mm: np.ndarray) -> np.ndarray:
    """Voxel → RAS affine: a small rotation (≤ 10°), LPS-like sign flips and an offset origin.

    The axes stay closest to (±R, ±A, ±S) in order, so the slice axis ``Z`` is the superior–inferior one.
    """
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(math.radians(2), math.radians(10))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)
    flips = np.diag([-1.0, -1.0, 1.0]) if rng.random() < 0.5 else np.diag(rng.choice([-1.0, 1.0], size=3))
    linear = rotation @ flips @ np.diag(spacing_mm)
    centre = (np.asarray(shape) - 1) / 2
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ centre + rng.uniform(-20.0, 20.0, size=3)
    return affine

"""A second, independent generator of MRA-like phantoms, for checking models trained on vol25d's own phantoms.

Written without any code of ``vol25d/data/phantom.py`` and deliberately different from it:

- Geometry: an anatomical layout rather than random trees. Two carotid-like trunks and two vertebral arteries
  enter through the bottom face (low Z) inside a neck, the vertebrals merge into a basilar artery, all of them
  join a ring (a circle-of-Willis-like loop) near the centre-bottom of the brain, and six main branches leave
  the ring (anterior, middle and posterior pairs) and split again and again, upward and outward, until the
  radius drops below ~0.3 voxel; branches that reach the brain surface slide along it (like cortical
  arteries), so the tree covers the whole brain. Every branch is a Catmull–Rom spline through a few control
  points chosen by a steered walk (momentum + outward + upward pull), resampled by arc length. Radii follow
  a Murray-like law from ~3 voxels (at 96³; scaled with the grid) to sub-voxel twigs; larger branches grow
  first (a priority queue) until a vessel-volume budget is spent.
- Rendering: each spline segment is a capsule with a linearly varying radius, splatted into its bounding box
  with the exact point-to-segment distance. Partial volume is a disc blurred by a Gaussian point spread
  (an erfc edge, with the centre value of a blurred disc so sub-voxel vessels get dimmer, not wider).
  The label is ``distance <= radius`` plus every centreline voxel (so vessels thinner than half a voxel keep
  a connected one-voxel label).
- Contrast: scanner-like integer units. Air 0, brain 300–400 with a smooth texture made of random plane
  waves, dark CSF "ventricles", a dark skull, a bright subcutaneous fat/skin layer (500–700, visible in a
  MIP), neck muscle; vessels 900–1400 whose brightness decays with the path length from the entry (inflow
  saturation), times a TONE-like ramp that brightens the vessels towards the top of the slab.
- Bias field: the root-sum-of-squares sensitivity of a ring of receive coils plus two on top (bright
  periphery, darker centre), not a smooth random polynomial.
- Noise: Rician from complex Gaussian noise that is spatially correlated in-plane (zero-filling-like
  interpolation), sigma 12–30 units; the image is rounded and stored as int16.
- Header: either isotropic 0.35–0.5 mm voxels or 0.3–0.42 mm in-plane with slices twice as thick; an oblique
  tilt of 6–15° about the left–right axis (plus a little yaw and roll), x always negated (radiological, LPS-like),
  y negated in most cases, Z running inferior → superior, and a scanner-like isocentre offset.

Usage:
    python experiments/other_phantoms.py OUT [--n 4] [--size 48] [--seed 0]

API:
    make_other_phantom(size, seed) -> (image int16 (X, Y, Z), label uint8 (X, Y, Z), affine float64 (4, 4))
    write_other_dataset(out_dir, n, size, seed) -> Path   (nnU-Net/MSD layout, as vol25d's make-phantoms)
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import erfc

__all__ = ["make_other_phantom", "write_other_dataset", "other_seed"]

_CASE_FILE = re.compile(r"^other_(?P<index>\d{3,})(_0000)?\.nii\.gz$")
_PAIRS_PER_CHUNK = 300_000  # voxel/segment pairs per splatting chunk
_R_MIN_VOX = 0.3  # branches end below this radius (in in-plane voxels)


# ----------------------------------------------------------------------------------------------- public API


def make_other_phantom(size: int | tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One MRA-like volume, its vessel label and its affine, in file voxel order ``(X, Y, Z)``.

    Args:
        size: voxels per axis ``(X, Y, Z)`` or one int for a cube, each at least 16. Z is the
            inferior → superior axis; the vessel trunks enter through the ``Z = 0`` face.
        seed: seed of the one random generator used; the same seed gives identical arrays.

    Returns:
        ``(image, label, affine)``: int16 image in scanner-like units (air ≈ 0–50, brain ≈ 300–400,
        fat ≈ 500–700, vessels ≈ 900–1400 before bias and noise), uint8 label (0/1) and a float64 voxel → RAS
        affine.
    """
    shape = _shape(size)
    rng = np.random.default_rng(seed)
    spacing = _spacing(rng)
    geo = _Geometry(shape, spacing, rng)
    r_root = float(np.clip(min(shape) / 32.0, 1.2, 3.2)) * spacing[0]  # mm; ~3 voxels at 96³
    budget = float(rng.uniform(0.007, 0.012)) * float(np.prod(np.asarray(shape) * spacing))
    segments = _vessel_tree(rng, geo, r_root, budget)
    coverage, vessel_signal, label = _render(shape, spacing, segments)
    tissue = _anatomy(rng, geo)
    tone = (0.88 + 0.22 * np.linspace(0.0, 1.0, shape[2], dtype=np.float32))[None, None, :]  # TONE ramp
    clean = tissue * (1.0 - coverage) + vessel_signal * tone
    clean *= _coil_bias(rng, geo)
    image = _correlated_rician(rng, clean, float(rng.uniform(12.0, 30.0)))
    image = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    return image, label, _affine(rng, shape, spacing)


def other_seed(dataset_seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset written with ``dataset_seed`` (unrelated cases for nearby seeds)."""
    return int(np.random.SeedSequence(entropy=[0x0BE5, dataset_seed], spawn_key=(index,)).generate_state(1)[0])


def write_other_dataset(out_dir: str | Path, n: int, size: int | tuple[int, int, int], seed: int) -> Path:
    """Write ``n`` cases in the nnU-Net/MSD layout (``imagesTr/other_XXX_0000.nii.gz`` int16,
    ``labelsTr/other_XXX.nii.gz`` uint8, ``dataset.json``) and return the folder.

    Files ``other_*`` of cases ``>= n`` left by an earlier, larger run are deleted.
    """
    from vol25d.io import Volume, write_volume

    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    shape = _shape(size)
    root = Path(out_dir)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for path in sorted((root / folder).glob("other_*")):
            match = _CASE_FILE.match(path.name)
            if match and int(match["index"]) >= n:
                path.unlink()
    for i in range(n):
        image, label, affine = make_other_phantom(shape, other_seed(seed, i))
        name = f"other_{i:03d}"
        write_volume(Volume(image, affine), root / "imagesTr" / f"{name}_0000.nii.gz")
        write_volume(Volume(label, affine), root / "labelsTr" / f"{name}.nii.gz")
    info = {
        "name": "other_phantoms",
        "description": (f"Independent MRA-like phantoms from experiments/other_phantoms.py (size {shape}, seed "
                        f"{seed}): anatomical arterial tree with a basal ring, coil bias, correlated Rician "
                        "noise, int16 scanner units."),
        "channel_names": {"0": "MRA"},
        "labels": {"background": 0, "vessel": 1},
        "numTraining": n,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    return root


# ----------------------------------------------------------------------------------------------- geometry


def _shape(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    shape = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"size must be an int or three ints, each >= 16; got {size!r}")
    return shape  # type: ignore[return-value]


def _spacing(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:
        return np.full(3, rng.uniform(0.35, 0.5))  # isotropic 3-D TOF
    s = rng.uniform(0.3, 0.42)
    return np.array([s, s, 2.0 * s])  # thin in-plane, slices twice as thick


class _Geometry:
    """Head layout in mm in the array frame (voxel ``i`` sits at ``i * spacing``)."""

    def __init__(self, shape: tuple[int, int, int], spacing: np.ndarray, rng: np.random.Generator) -> None:
        self.shape, self.spacing = shape, spacing
        self.half = np.asarray(shape) * spacing / 2.0  # half extents
        self.centre = (np.asarray(shape) - 1) * spacing / 2.0
        hx, hy, hz = self.half
        hxy = min(hx, hy)
        jitter = rng.uniform(0.96, 1.04, size=3)
        ay = 0.80 * hy * jitter[1]
        self.brain_axes = np.array([0.74 * hx * jitter[0], ay, min(0.72 * hz, 1.3 * ay) * jitter[2]])
        top = self.centre[2] + hz
        self.brain_centre = np.array([self.centre[0], self.centre[1] + 0.02 * hy,
                                      top - self.brain_axes[2] - 0.2 * hxy])
        self.exponent = 2.4  # a slightly boxy super-ellipsoid
        self.bottom = self.centre[2] - hz
        self.ring_z = self.brain_centre[2] - 0.62 * self.brain_axes[2]
        self.neck_top = self.brain_centre[2] - 0.35 * self.brain_axes[2]
        self.neck_axes = np.array([0.46 * hx, 0.44 * hy])
        self.neck_centre = np.array([self.centre[0], self.centre[1] - 0.06 * hy])

    def to_mm(self, x: float, y: float, z_mm: float) -> np.ndarray:
        """``x, y`` in half-extents from the grid centre, ``z`` in mm."""
        return np.array([self.centre[0] + x * self.half[0], self.centre[1] + y * self.half[1], z_mm])

    def inside(self, p: np.ndarray, shrink: float = 0.93) -> tuple[float, np.ndarray]:
        """Ellipsoidal radius of ``p`` in the (shrunken) brain and the outward normal there."""
        q = (p - self.brain_centre) / (self.brain_axes * shrink)
        rho = float(np.sqrt(q @ q))
        normal = q / (self.brain_axes * shrink)
        return rho, normal / (np.linalg.norm(normal) + 1e-12)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def _catmull_rom(points: np.ndarray, step: float, closed: bool = False) -> np.ndarray:
    """A uniform Catmull–Rom spline through ``points`` (``(n, 3)``), resampled every ``step`` mm of arc."""
    if closed:
        ext = np.concatenate([points[-1:], points, points[:2]])
    else:
        ext = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    n_spans = len(ext) - 3
    t = np.linspace(0.0, 1.0, 12, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    spans = []
    for k in range(n_spans):
        p0, p1, p2, p3 = ext[k], ext[k + 1], ext[k + 2], ext[k + 3]
        spans.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                            + (3 * p1 - p0 - 3 * p2 + p3) * t3))
    fine = np.concatenate(spans + [ext[-2:-1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(fine, axis=0), axis=1))])
    n = max(2, int(math.ceil(arc[-1] / step)) + 1)
    s = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(s, arc, fine[:, i]) for i in range(3)], axis=1)


def _rotate_away(d: np.ndarray, angle: float, rng: np.random.Generator, pull: np.ndarray) -> np.ndarray:
    """``d`` turned by ``angle`` towards a random perpendicular, biased towards ``pull``."""
    side = rng.standard_normal(3) + 1.5 * pull
    side = side - (side @ d) * d
    side = _unit(side) if np.linalg.norm(side) > 1e-6 else _unit(np.cross(d, [0.3, 0.5, 0.8]))
    return _unit(math.cos(angle) * d + math.sin(angle) * side)


def _vessel_tree(rng: np.random.Generator, geo: _Geometry, r_root: float, budget_mm3: float) -> dict:
    """Segments (``a``, ``b``, ``ra``, ``rb``, ``bright``) of the arterial tree, in mm."""
    sx = float(geo.spacing[0])
    r_min = _R_MIN_VOX * sx
    step = 1.6 * float(geo.spacing.min())  # segment length
    sat_length = 2.0 * float(geo.brain_axes.mean())  # inflow saturation length
    bright0 = float(rng.uniform(1250.0, 1400.0))  # fresh blood at the entry; saturates towards 950
    pieces_a, pieces_b, pieces_ra, pieces_rb, pieces_br = [], [], [], [], []
    used = 0.0

    def emit(curve: np.ndarray, r0: float, r1: float, path0: float) -> np.ndarray:
        """Add a resampled curve as segments; returns the path length at each sample."""
        nonlocal used
        seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
        path = path0 + np.concatenate([[0.0], np.cumsum(seg)])
        radius = np.linspace(r0, r1, len(curve))
        bright = (950.0 + (bright0 - 950.0) * np.exp(-path / sat_length)) * rng.uniform(0.97, 1.03)
        pieces_a.append(curve[:-1]); pieces_b.append(curve[1:])
        pieces_ra.append(radius[:-1]); pieces_rb.append(radius[1:])
        pieces_br.append(0.5 * (bright[:-1] + bright[1:]))
        used += float(np.sum(math.pi * radius[:-1] ** 2 * seg))
        return path

    # Trunks through the neck into the ring.
    z0, zr = geo.bottom - 2.0 * step, geo.ring_z
    span = zr - z0
    ring_y, rx, ry = 0.05, 0.17, 0.15

    def ring_point(theta_deg: float) -> np.ndarray:
        th = math.radians(theta_deg)
        return geo.to_mm(rx * math.sin(th), ring_y + ry * math.cos(th), zr)

    def jit(scale: float = 0.02) -> np.ndarray:
        return np.concatenate([rng.normal(0, scale, 2) * geo.half[:2], [0.0]])

    ring_pts = np.array([ring_point(a) + jit(0.01) for a in range(0, 360, 30)])
    ring_pts[:, 2] += rng.normal(0.0, 0.02 * span, len(ring_pts))
    emit(_catmull_rom(ring_pts, step, closed=True), 0.5 * r_root, 0.5 * r_root, 0.4 * sat_length)
    for side in (-1.0, 1.0):  # carotid-like trunks with a siphon bend
        ctrl = np.array([geo.to_mm(side * 0.24, 0.06, z0), geo.to_mm(side * 0.23, 0.09, z0 + 0.35 * span),
                         geo.to_mm(side * 0.27, 0.16, z0 + 0.7 * span), geo.to_mm(side * 0.22, 0.05, z0 + 0.9 * span),
                         ring_point(side * 60.0)])
        ctrl[1:-1] += np.array([jit() for _ in range(3)])
        emit(_catmull_rom(ctrl, step), r_root, 0.8 * r_root, 0.0)
    basilar_start = geo.to_mm(0.0, -0.24, z0 + 0.55 * span)
    for side in (-1.0, 1.0):  # vertebral arteries merging into the basilar
        ctrl = np.array([geo.to_mm(side * 0.11, -0.30, z0), geo.to_mm(side * 0.08, -0.28, z0 + 0.3 * span),
                         basilar_start + np.array([side * 0.02 * geo.half[0], 0, -0.05 * span])])
        ctrl[1] += jit(0.015)
        emit(_catmull_rom(np.concatenate([ctrl, basilar_start[None]]), step), 0.6 * r_root, 0.55 * r_root, 0.0)
    emit(_catmull_rom(np.array([basilar_start, geo.to_mm(0.0, -0.2, z0 + 0.8 * span), ring_point(180.0)]), step),
         0.75 * r_root, 0.7 * r_root, 0.1 * sat_length)

    # Main branches leaving the ring: (angle on the ring, initial direction, radius factor).
    up = np.array([0.0, 0.0, 1.0])
    queue: list = []
    counter = 0
    for side in (-1.0, 1.0):
        for theta, direction, factor in ((15.0, (0.1 * side, 0.7, 0.7), 0.55),  # anterior
                                         (90.0, (side, 0.1, 0.25), 0.7),  # middle
                                         (145.0, (0.4 * side, -0.8, 0.35), 0.55)):  # posterior
            start = ring_point(side * theta)
            d = _unit(np.array(direction))
            heapq.heappush(queue, (-factor * r_root, counter, start, d, factor * r_root, 0.5 * sat_length, 0))
            counter += 1

    scale = float(geo.brain_axes.mean())
    # Branches spread away from a hub below the ring (not from the brain's centre, which would pull the
    # branches that leave the ring downwards), so they fan out upwards and sideways like cerebral arteries.
    hub = np.array([geo.brain_centre[0], geo.brain_centre[1], zr - 0.4 * geo.brain_axes[2]])
    while queue and used < budget_mm3:
        _, _, p, d, r0, path0, depth = heapq.heappop(queue)
        length = scale * (0.35 + 0.45 * math.sqrt(r0 / r_root)) * rng.uniform(0.75, 1.2)
        n_ctrl = 4
        dl = length / n_ctrl
        ctrl = [p]
        out_w = 0.25 + 0.08 * depth
        for _ in range(n_ctrl):
            rho, normal = geo.inside(ctrl[-1])
            outward = _unit(ctrl[-1] - hub)
            d = _unit(d + out_w * outward + 0.12 * up + 0.35 * rng.standard_normal(3))
            if rho > 0.85 and d @ normal > 0:  # near the surface: slide along it
                d = _unit(d - 1.1 * (d @ normal) * normal)
            q = ctrl[-1] + dl * d
            rho_q, _ = geo.inside(q)
            if rho_q > 1.0:
                q = geo.brain_centre + (q - geo.brain_centre) / rho_q
            ctrl.append(q)
        curve = _catmull_rom(np.array(ctrl), step)
        r1 = r0 * rng.uniform(0.72, 0.85)
        path = emit(curve, r0, r1, path0)
        if len(curve) < 3:
            continue
        tangent_end = _unit(curve[-1] - curve[-2])
        # Side branches along the way, then a bifurcation at the end.
        for _ in range(int(rng.integers(1, 3))):
            k = int(rng.integers(len(curve) // 4, max(len(curve) // 4 + 1, 3 * len(curve) // 4)))
            rk = r0 + (r1 - r0) * k / (len(curve) - 1)
            rc = rk * rng.uniform(0.45, 0.65)
            if rc >= r_min:
                t = _unit(curve[min(k + 1, len(curve) - 1)] - curve[max(k - 1, 0)])
                dc = _rotate_away(t, math.radians(rng.uniform(40, 75)), rng, _unit(curve[k] - hub))
                heapq.heappush(queue, (-rc, counter, curve[k], dc, rc, float(path[k]), depth + 1))
                counter += 1
        for _ in range(2):
            rc = r1 * rng.uniform(0.7, 0.85)
            if rc >= r_min:
                dc = _rotate_away(tangent_end, math.radians(rng.uniform(20, 45)), rng,
                                  _unit(curve[-1] - hub))
                heapq.heappush(queue, (-rc, counter, curve[-1], dc, rc, float(path[-1]), depth + 1))
                counter += 1
    return {
        "a": np.concatenate(pieces_a), "b": np.concatenate(pieces_b), "ra": np.concatenate(pieces_ra),
        "rb": np.concatenate(pieces_rb), "bright": np.concatenate(pieces_br),
    }


# ----------------------------------------------------------------------------------------------- rendering


def _render(shape: tuple[int, int, int], spacing: np.ndarray, seg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capsule splatting: ``(coverage float32, vessel signal float32, label uint8)``."""
    size = int(np.prod(shape))
    coverage = np.zeros(size, np.float32)
    signal = np.zeros(size, np.float32)
    label = np.zeros(size, np.uint8)
    dims = np.asarray(shape)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    sigma = 0.32 * float(np.prod(spacing)) ** (1.0 / 3.0)  # Gaussian point spread, mm
    a, b, ra, rb, bright = seg["a"], seg["b"], seg["ra"], seg["rb"], seg["bright"]

    # Centreline voxels (four samples per segment): thin vessels keep a connected label.
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        idx = np.rint((a + t * (b - a)) / spacing).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < dims), axis=1)
        label[idx[ok] @ strides] = 1

    mid = 0.5 * (a + b)
    reach = 0.5 * np.linalg.norm(b - a, axis=1) + np.maximum(ra, rb) + 2.5 * sigma
    half = np.ceil(reach[:, None] / spacing).astype(np.int64)
    centre = np.rint(mid / spacing).astype(np.int64)
    keys = (half[:, 0] * 64 + half[:, 1]) * 64 + half[:, 2]
    for key in np.unique(keys):
        group = np.flatnonzero(keys == key)
        hx, hy, hz = half[group[0]]
        offsets = np.stack(np.meshgrid(np.arange(-hx, hx + 1), np.arange(-hy, hy + 1), np.arange(-hz, hz + 1),
                                       indexing="ij"), axis=-1).reshape(-1, 3)
        chunk = max(1, _PAIRS_PER_CHUNK // len(offsets))
        for start in range(0, len(group), chunk):
            g = group[start:start + chunk]
            vox = centre[g, None, :] + offsets[None]  # (n, m, 3)
            q = vox * spacing  # mm
            ab = (b[g] - a[g])[:, None, :]
            t = np.clip(np.sum((q - a[g, None, :]) * ab, axis=-1) / np.maximum(np.sum(ab * ab, axis=-1), 1e-12),
                        0.0, 1.0)
            dist = np.linalg.norm(q - a[g, None, :] - t[..., None] * ab, axis=-1)
            radius = ra[g, None] + t * (rb[g] - ra[g])[:, None]
            edge = 0.5 * erfc((dist - radius) / (sigma * math.sqrt(2.0)))
            # Centre value of a disc blurred by the Gaussian, so thin vessels get dimmer rather than wider.
            centre_value = -np.expm1(-radius * radius / (2.0 * sigma * sigma))
            peak = centre_value / (0.5 * erfc(-radius / (sigma * math.sqrt(2.0))))
            cov = edge * peak
            ok = np.all((vox >= 0) & (vox < dims), axis=-1) & (cov > 1e-3)
            flat = vox[ok] @ strides
            np.maximum.at(coverage, flat, cov[ok].astype(np.float32))
            np.maximum.at(signal, flat, (cov * bright[g, None])[ok].astype(np.float32))
            label[flat[dist[ok] <= radius[ok]]] = 1
    return coverage.reshape(shape), signal.reshape(shape), label.reshape(shape)


def _soft(t: np.ndarray, width: float) -> np.ndarray:
    return np.clip(0.5 + t / width, 0.0, 1.0).astype(np.float32)


def _waves(rng: np.random.Generator, geo: _Geometry, n: int, wavelengths_mm: tuple[float, float]) -> np.ndarray:
    """Unit-std smooth texture: a sum of random plane waves (separable complex exponentials)."""
    axes = [np.arange(s) * sp for s, sp in zip(geo.shape, geo.spacing)]
    out = np.zeros(geo.shape, np.float32)
    for _ in range(n):
        k = _unit(rng.standard_normal(3)) * 2 * math.pi / rng.uniform(*wavelengths_mm)
        phase = rng.uniform(0, 2 * math.pi)
        ex, ey, ez = (np.exp(1j * (ki * x)).astype(np.complex64) for ki, x in zip(k, axes))
        wave = ex[:, None, None] * ey[None, :, None] * (ez * np.complex64(np.exp(1j * phase)))[None, None, :]
        out += wave.real * np.float32(rng.uniform(0.5, 1.0))
    return (out - out.mean()) / (out.std() + 1e-6)


def _anatomy(rng: np.random.Generator, geo: _Geometry) -> np.ndarray:
    """Background tissue intensities (no vessels), float32."""
    x, y, z = (np.arange(s, dtype=np.float32) * np.float32(sp) for s, sp in zip(geo.shape, geo.spacing))
    c, ax = geo.brain_centre, geo.brain_axes
    p = geo.exponent
    rho = (np.abs((x - c[0]) / ax[0])[:, None, None] ** p + np.abs((y - c[1]) / ax[1])[None, :, None] ** p
           + np.abs((z - c[2]) / ax[2])[None, None, :] ** p) ** (1.0 / p)
    edge = float(geo.spacing.min()) / float(ax.min())  # about one voxel, in units of the semi-axis
    nc, na = geo.neck_centre, geo.neck_axes
    rho_neck = np.sqrt(((x - nc[0]) / na[0])[:, None, None] ** 2 + ((y - nc[1]) / na[1])[None, :, None] ** 2)
    below = _soft((geo.neck_top - z)[None, None, :] / float(ax[2]), edge)
    brain = _soft(1.0 - rho, edge)
    inner = np.maximum(_soft(1.07 - rho, edge), _soft(1.0 - rho_neck, edge) * below)
    outer = np.maximum(_soft(1.17 - rho, edge), _soft(1.14 - rho_neck, edge) * below)
    muscle = np.clip(_soft(1.0 - rho_neck, edge) * below - brain, 0.0, 1.0)
    skull = np.clip(inner - brain - muscle, 0.0, 1.0)
    fat = np.clip(outer - inner, 0.0, 1.0)

    texture = 0.7 * _waves(rng, geo, 8, (6.0 * geo.spacing.min(), 14.0 * geo.spacing.min())) \
        + 0.5 * _waves(rng, geo, 4, (20.0 * geo.spacing.min(), 40.0 * geo.spacing.min()))
    brain_level = float(rng.uniform(320.0, 380.0))
    tissue = brain * (brain_level + 18.0 * texture)
    for side in (-1.0, 1.0):  # CSF: a pair of dark ventricles
        vc = c + np.array([side * 0.12 * ax[0], -0.05 * ax[1], 0.15 * ax[2]])
        va = np.array([0.09, 0.3, 0.14]) * ax
        v = np.sqrt(((x - vc[0]) / va[0])[:, None, None] ** 2 + ((y - vc[1]) / va[1])[None, :, None] ** 2
                    + ((z - vc[2]) / va[2])[None, None, :] ** 2)
        csf = _soft(1.0 - v, 0.3) * brain
        tissue = tissue * (1.0 - csf) + csf * float(rng.uniform(120.0, 170.0))
    tissue += muscle * (float(rng.uniform(230.0, 280.0)) + 12.0 * texture)
    tissue += skull * float(rng.uniform(30.0, 60.0))
    tissue += fat * (float(rng.uniform(500.0, 620.0)) + 25.0 * texture)
    return tissue.astype(np.float32)


def _coil_bias(rng: np.random.Generator, geo: _Geometry) -> np.ndarray:
    """Receive-coil sensitivity: RSS of a ring of 8 coils plus 2 on top, normalised to 1 inside the brain."""
    x, y, z = (np.arange(s, dtype=np.float32) * np.float32(sp) for s, sp in zip(geo.shape, geo.spacing))
    c, ax = geo.brain_centre, geo.brain_axes
    d0 = 1.1 * float(ax.mean())
    coils = []
    z_ring = c[2] + rng.uniform(-0.3, 0.2) * ax[2]
    for k in range(8):
        angle = 2 * math.pi * k / 8 + rng.uniform(-0.2, 0.2)
        coils.append((c[0] + 1.3 * ax[0] * math.cos(angle), c[1] + 1.3 * ax[1] * math.sin(angle), z_ring))
    for k in range(2):
        coils.append((c[0] + (k - 0.5) * 0.6 * ax[0], c[1], c[2] + 1.3 * ax[2]))
    rss = np.zeros(geo.shape, np.float32)
    for cx, cy, cz in coils:
        gain = np.float32(rng.uniform(0.8, 1.2))
        r2 = (((x - cx) ** 2)[:, None, None] + ((y - cy) ** 2)[None, :, None] + ((z - cz) ** 2)[None, None, :])
        rss += (gain / (1.0 + r2 / np.float32(d0 * d0))) ** 2
    rss = np.sqrt(rss)
    centre_idx = tuple(int(np.clip(round(v), 0, n - 1)) for v, n in zip(c / geo.spacing, geo.shape))
    field = rss / rss[centre_idx]
    field = field ** np.float32(rng.uniform(0.25, 0.4))  # brain periphery ~10–30 % brighter than the centre
    return np.clip(field, 0.7, 1.35).astype(np.float32)


def _correlated_rician(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``clean`` plus complex noise, correlated in-plane like a zero-filled reconstruction."""
    kernel = np.array([0.25, 0.5, 0.25], np.float32)
    gain = float(np.sum(kernel ** 2))  # per filtered axis, the variance is scaled by this
    parts = []
    for _ in range(2):
        noise = rng.standard_normal(clean.shape, dtype=np.float32)
        for axis in (0, 1):
            noise = ndimage.convolve1d(noise, kernel, axis=axis, mode="wrap")
        parts.append(noise * np.float32(sigma / gain))
    real = clean + parts[0]
    return np.sqrt(real * real + parts[1] * parts[1])


def _affine(rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray) -> np.ndarray:
    """Voxel → RAS: oblique tilt about left–right, small yaw/roll, x negated, y mostly negated, scanner offset."""
    def rot(axis: int, deg: float) -> np.ndarray:
        t = math.radians(deg)
        c, s = math.cos(t), math.sin(t)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    tilt = rng.uniform(6.0, 15.0) * rng.choice([-1.0, 1.0])
    rotation = rot(2, rng.uniform(-4.0, 4.0)) @ rot(0, tilt) @ rot(1, rng.uniform(-3.0, 3.0))
    flips = np.diag([-1.0, -1.0 if rng.random() < 0.75 else 1.0, 1.0])
    linear = rotation @ flips @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    isocentre = np.array([rng.uniform(-12, 12), rng.uniform(-35, -5), rng.uniform(5, 40)])
    affine[:3, 3] = isocentre - linear @ ((np.asarray(shape) - 1) / 2.0)
    return affine


# ----------------------------------------------------------------------------------------------- script


def dataset_script(writer, description: str, argv: list[str] | None = None, default_n: int = 4) -> int:
    """The command line of a phantom generator script: ``OUT [--n N] [--size S] [--seed SEED]`` → ``writer(OUT,
    n, size, seed)``, and one line saying what it wrote."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("out", help="dataset folder to write (MSD layout)")
    parser.add_argument("--n", type=int, default=default_n, help=f"number of cases (default {default_n})")
    parser.add_argument("--size", type=int, default=48, help="voxels a side (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = writer(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.n} cases of {args.size}^3 to {root} in {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return dataset_script(write_other_dataset, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Timing helpers for the raw Triton kernels of vol25d.ops.triton_kernels (GPU only): a tile sweep and the
memory floor they are measured against. ``experiments/bench_ops.py`` owns the figures docs/benchmarks.md quotes;
this script is for tuning the tile sizes.

Floor: one read of the volume per view (and one write of the view), at the device-to-device copy bandwidth
measured here — a kernel at ≤ 1.0× this floor reads the volume no more than once per view from DRAM.

Usage: ``python experiments/bench_ops_kernels.py [--size 256] [--views 64] [--dtype float32]``.
"""

from __future__ import annotations

import argparse
import itertools
import logging

import torch

from vol25d.geometry import default_detector, equal_angles

log = logging.getLogger("bench_ops_kernels")


def event_seconds(fn) -> float:
    """Seconds of one ``fn()`` on the GPU, timed with CUDA events (synchronises)."""
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / 1e3


def cuda_time(fn, repeats: int = 10) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs, after one warm-up (which also compiles)."""
    fn()
    torch.cuda.synchronize()
    times = sorted(event_seconds(fn) for _ in range(repeats))
    return times[len(times) // 2]


def copy_bandwidth(tensor: torch.Tensor) -> float:
    """Bytes per second of a device-to-device copy of ``tensor`` (read + write)."""
    out = torch.empty_like(tensor)
    seconds = cuda_time(lambda: out.copy_(tensor))
    return 2 * tensor.numel() * tensor.element_size() / seconds


def per_view_floor(volume: torch.Tensor, detector: int, bandwidth: float) -> float:
    """Seconds to read the volume once and write one view ``(N, D, S)`` at ``bandwidth``."""
    n, depth = volume.shape[:2]
    view_bytes = n * depth * detector * volume.element_size()
    return (volume.numel() * volume.element_size() + view_bytes) / bandwidth


def sweep(size: int, count: int, dtype: torch.dtype) -> list[dict]:
    """Time every kernel over a small grid of tile sizes on a ``(1, size, size, size)`` volume."""
    from vol25d.ops import triton_kernels as kernels

    device = torch.device("cuda")
    volume = torch.randn(1, size, size, size, device=device).to(dtype)
    angles = equal_angles(count, device=device)
    detector = default_detector(size, size)
    views = torch.randn(1, count, size, detector, device=device).to(dtype)
    floor = per_view_floor(volume, detector, copy_bandwidth(volume))
    _, argmax = kernels.mip(volume, angles, detector, True)
    configs = {
        "mip": [
            dict(block_d=d, block_s=s, views_per_program=v)
            for d, s, v in itertools.product((4, 8, 16), (32, 64, 128), (1, 2, 4))
        ],
        "backproject": [
            dict(block_d=d, block_h=h, block_w=w) for d, h, w in itertools.product((1, 4, 8), (8, 16, 32), (16, 32))
        ],
        "project": [dict(block_d=d, block_s=s) for d, s in itertools.product((4, 8, 16), (32, 64, 128))],
        "mip_backward": [dict(block_d=d, block_s=s) for d, s in itertools.product((4, 8), (32, 64))],
    }
    calls = {
        "mip": lambda cfg: kernels.mip(volume, angles, detector, False, **cfg),
        "backproject": lambda cfg: kernels.backproject(views, angles, size, size, **cfg),
        "project": lambda cfg: kernels.project(volume, angles, detector, **cfg),
        "mip_backward": lambda cfg: kernels.mip_backward(views, argmax, angles, size, size, deterministic=False, **cfg),
    }
    rows = []
    for name, grid in configs.items():
        for cfg in grid:
            seconds = cuda_time(lambda: calls[name](cfg))
            rows.append({"kernel": name, **cfg, "ms": 1e3 * seconds, "x_floor": seconds / count / floor})
            log.info("%s %s: %.3f ms, %.2f× the per-view floor", name, cfg, 1e3 * seconds, rows[-1]["x_floor"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=64)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        raise SystemExit("bench_ops_kernels needs a CUDA device")
    log.info("device: %s", torch.cuda.get_device_name())
    rows = sweep(args.size, args.views, getattr(torch, args.dtype))
    for name in dict.fromkeys(row["kernel"] for row in rows):
        best = min((row for row in rows if row["kernel"] == name), key=lambda row: row["ms"])
        log.info("best %s: %s", name, best)


if __name__ == "__main__":
    main()

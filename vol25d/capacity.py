"""How many voxels a whole-volume training step fits on a device: the voxel cap that ``vol25d train`` plans.

On a CUDA GPU the cap comes from a measurement at planning time: one path-1 training step of the model on a
random volume of the planned median shape, as training runs it (:func:`vol25d.train.paths.path1_probe`, which
training passes in: its augmentation, loss, activation checkpointing and AdamW step), its peak memory read from
the allocator. Memory grows at most linearly with the voxels (U's views grow with ``D·√(H·W)``, the volume terms
with ``D·H·W``), so ``voxels × budget / peak`` voxels fit; when the median image itself does not fit, the
grid is coarsened and the step measured again on it. On a CPU the cap is :data:`DEFAULT_MAX_VOXELS`, which
keeps a step around a second.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Callable

import torch

from vol25d.geometry import default_detector
from vol25d.settings import DEFAULT_MAX_VOXELS, MIN_SIZE, ModelConfig

log = logging.getLogger(__name__)

__all__ = ["step_peak_bytes", "fit_voxel_cap", "plan_voxel_cap", "BUDGET_FRACTION"]

# Share of the free device memory a training step may plan to use: the allocator's fragmentation, the CUDA
# context of libraries loaded later and the other images' sizes need the rest.
BUDGET_FRACTION = 0.8
_ATTEMPTS = 6


def step_peak_bytes(step: Callable[[tuple[int, int, int]], object], shape_dhw: tuple[int, int, int],
                    device: torch.device) -> float:
    """Peak CUDA memory of ``step(shape_dhw)`` (one training step on a volume of that shape) above what was
    allocated before it; ``inf`` when it runs out."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        step(shape_dhw)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    except torch.cuda.OutOfMemoryError:
        return math.inf
    finally:
        torch.cuda.empty_cache()


def _coarser(shape: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """``shape`` with ``factor`` times fewer voxels, one common scale per axis (H == W stays)."""
    scale = factor ** (1 / 3)
    return tuple(max(MIN_SIZE, int(n / scale)) for n in shape)


def fit_voxel_cap(measure: Callable[[tuple[int, ...]], float], shape_dhw: tuple[int, int, int],
                  budget_bytes: float) -> tuple[int, float, tuple[int, ...]]:
    """The most voxels a step fits in ``budget_bytes``, from measurements of ``measure(shape) → bytes``.

    Measures the planned ``shape_dhw`` first; when it does not fit, a coarser shape, scaled to the budget
    by the memory seen (with a 10 % margin), until one fits.

    Returns:
        ``(cap, peak, shape)``: the voxel cap (≥ the measured shape's voxels), the peak bytes measured at
        ``shape``, the last shape measured.

    Raises:
        MemoryError: not even an ``8³``-per-axis volume fits.
    """
    shape = tuple(int(n) for n in shape_dhw)
    for _ in range(_ATTEMPTS):
        peak = measure(shape)
        voxels = math.prod(shape)
        if peak <= budget_bytes:
            return max(voxels, int(voxels * budget_bytes / max(peak, 1.0))), peak, shape
        if min(shape) <= MIN_SIZE:
            break
        factor = peak / budget_bytes * 1.1 if math.isfinite(peak) else 4.0
        shape = _coarser(shape, factor)
    raise MemoryError(f"a path-1 training step of {'×'.join(map(str, shape))} voxels does not fit in "
                      f"{budget_bytes / 2**30:.1f} GiB of device memory")


def available_ram_bytes() -> float | None:
    """The host memory a new allocation can take (Linux ``MemAvailable``), ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def ram_voxel_cap(config: ModelConfig, held_cases: int, available: float | None) -> int:
    """The most voxels per image for which ``held_cases`` preprocessed cases (float32 image channels, uint8
    labels, as training holds them all in host memory) fit in :data:`BUDGET_FRACTION` of ``available``
    bytes; ``0`` (no cap) when the memory is unknown or no case is held."""
    if not available or held_cases <= 0:
        return 0
    per_voxel = 4 * config.in_channels + config.out_channels
    return max(MIN_SIZE**3, int(BUDGET_FRACTION * available / (held_cases * per_voxel)))


def plan_voxel_cap(config: ModelConfig, shape_dhw: tuple[int, int, int], device: torch.device,
                   step: Callable[[tuple[int, int, int]], object], cached_cases: int = 0, held_cases: int = 0) -> int:
    """The voxel cap of training ``config`` on ``device`` for a median image of ``shape_dhw`` voxels.

    CPU: :data:`DEFAULT_MAX_VOXELS` (``step`` is not run). CUDA: the memory of ``step(shape)``, one training
    step on a volume of ``shape`` as training runs it (:func:`vol25d.train.paths.path1_probe`), measured with
    :func:`fit_voxel_cap` in :data:`BUDGET_FRACTION` of the free memory, less path 2's cache of U's views of
    ``cached_cases`` volumes of that shape (``m`` views each, float32; with the image's views for
    ``reconstruction="image"``), and at most what keeps ``held_cases`` preprocessed cases in host memory
    (:func:`ram_voxel_cap`).
    """
    if device.type != "cuda":
        voxels = math.prod(shape_dhw)
        if voxels > DEFAULT_MAX_VOXELS:
            log.info("on the CPU the voxel cap is %d (%s voxels planned); pass --max-voxels 0 to train at "
                     "full resolution", DEFAULT_MAX_VOXELS, "×".join(map(str, shape_dhw)))
        return DEFAULT_MAX_VOXELS
    free, total = torch.cuda.mem_get_info(device)
    depth, height, width = shape_dhw
    # U's probabilities of every view per case, and the image's own views for the explained reconstruction.
    planes = config.out_channels + (1 if config.reconstruction == "image" else 0)
    cache = cached_cases * config.directions * planes * depth * default_detector(height, width) * 4
    budget = BUDGET_FRACTION * free - cache
    cap, peak, shape = fit_voxel_cap(lambda s: step_peak_bytes(step, s, device), shape_dhw, budget)
    full = tuple(shape) == tuple(shape_dhw)
    log.info("%s: a path-1 step of %s voxels peaks at %.2f GiB of %.1f GiB free (%.1f GiB total, %.2f GiB for "
             "path 2's view cache): %s; voxel cap %d", torch.cuda.get_device_name(device),
             "×".join(map(str, shape)), peak / 2**30, free / 2**30, total / 2**30, cache / 2**30,
             "full resolution" if full else "the median image does not fit: coarsened", cap)
    ram_cap = ram_voxel_cap(config, held_cases, available_ram_bytes())
    if ram_cap and ram_cap < cap:
        log.info("%d training and validation cases of up to %d voxels would not fit in host memory: voxel cap %d "
                 "instead (pass --max-voxels to choose)", held_cases, cap, ram_cap)
        cap = ram_cap
    return cap

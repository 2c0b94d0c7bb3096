"""Speed and memory of vol25d on this machine: the model (a path-1 training step, whole-volume inference) and
its projection operators, against the reference PyTorch kernels, the GPU's memory and arithmetic floors, and
a ``grid_sample`` rotate-then-reduce MIP.

Prints the tables and writes them, with the machine they ran on, to ``experiments/results/bench_ops.md``.
Volumes are named ``H×W×D`` (NIfTI's ``X×Y×Z`` order, ``D`` — the rotation axis — last); the tensors are
``(1, 1, D, H, W)``. Cells that would take minutes per call on a CPU are skipped there (``--all-cpu`` runs
them anyway); GPU cells without a GPU say "not measured", never an estimate.

Usage: ``python experiments/bench_ops.py [--sizes 128 256 512x512x256] [--device auto|cpu|cuda]
[--repeats N] [--out experiments/results/bench_ops.md] [--smoke] [--all-cpu] [--threads N] [--note TEXT]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path

import monai
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

import vol25d
from vol25d.device import autocast
from vol25d.geometry import default_detector, equal_angles, random_directions, ray_samples
from vol25d.model import DEFAULT_VIEW_CHUNK, Random25DUNet
from vol25d.ops import backproject, mip, project
from vol25d.ops.backend import kernels_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, cpu_name, utc_now  # noqa: E402

log = logging.getLogger("bench_ops")

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = ("128", "256", "512x512x256")
SMOKE_SIZES = ("16", "24")
# A cell stops timing after `--repeats` runs or once its runs would pass this many seconds (≥ 1 run); on the
# CPU a call longer than this is timed once, its warm-up serving as the run (nothing to compile there).
CELL_BUDGET_S = 30.0
# Largest volume each measurement runs at on a CPU unless --all-cpu. With the reference kernels a 64-view MIP
# took ~60 s at 256³ on 2 shared cores, so training and inference stopped at 128³; with the CPU kernels
# (vol25d.ops.cpu_kernels) every cell up to 256³ runs (experiments/results/bench_ops.md). 512×512×256 stays
# off: tens of GB for the operators' inputs and outputs on such a machine.
CPU_MAX_VOXELS = {
    "train": 256**3,
    "inference": 256**3,
    "mip": 256**3,
    "mip backward": 256**3,
    "grid_sample": 256**3,
    "project": 256**3,
    "backproject": 256**3,
    "backproject backward": 256**3,
}
OPERATORS = ("mip", "mip backward", "project", "backproject", "backproject backward")
# Per operator: the samples it takes per view, and the taps (FMAs) of one: "voxel" = one sample per voxel
# and view (rays one bin apart, samples one voxel apart; voxel-driven ops interpolate once per voxel),
# "ray" = one per ray (mip's backward only touches each ray's winning sample).
SAMPLES = {
    "mip": ("voxel", 4),
    "mip backward": ("ray", 4),
    "project": ("voxel", 2),
    "backproject": ("voxel", 2),
    "backproject backward": ("voxel", 2),
}
TOO_SLOW = "not run on CPU (too slow)"
NOT_APPLICABLE = "—"


@dataclass(frozen=True)
class Settings:
    """What one run measures. ``sizes`` are ``(D, H, W)``; ``views`` is both ``m`` (inference) and the
    operators' view count."""

    sizes: tuple[tuple[int, int, int], ...]
    views: int = 64
    train_views: tuple[int, ...] = (8, 16)
    repeats: int = 5
    all_cpu: bool = False


# ----------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    seconds: float  # the median
    runs: int
    warm_up: bool = True


def median_seconds(fn, device: torch.device, repeats: int) -> Timing:
    """Median wall time of ``fn()`` after one warm-up (which also compiles kernels) over ``repeats`` runs,
    fewer when they would exceed :data:`CELL_BUDGET_S`. CUDA runs are timed with events."""
    cuda = device.type == "cuda"
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    first = time.perf_counter() - start
    if not cuda and first > CELL_BUDGET_S:
        return Timing(first, 1, warm_up=False)
    runs = max(1, min(repeats, int(CELL_BUDGET_S / max(first, 1e-9))))
    times = []
    for _ in range(runs):
        if cuda:
            from bench_ops_kernels import event_seconds

            times.append(event_seconds(fn))
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), runs)


def _proc_status_bytes(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _release_free_heap() -> None:
    """Hand glibc's free heap pages back to the OS, so memory freed earlier in this process is counted again
    when it is reused (it would otherwise already be resident, and hide in the baseline)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (``VmHWM``) to the current RSS (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """The most memory in use at once inside the ``with`` block, above what was in use when it began
    (``bytes``; ``None`` where it cannot be measured).

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, less the memory allocated
    at the start. CPU: the kernel's exact RSS high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) less the RSS at the start, after ``gc.collect`` and ``malloc_trim``.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self._base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            _release_free_heap()
            self._base = _proc_status_bytes("VmRSS")
            self._measurable = _reset_peak_rss()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self._base
        elif self._measurable:
            self.bytes = max(0, _proc_status_bytes("VmHWM") - self._base)


def model_call(kind: str, shape: tuple[int, int, int], views: int, directions: int, device: torch.device):
    """A closure running one path-1 training step (``kind="train"``, ``p = views``: forward, soft Dice,
    backward, AdamW step) or one whole-volume inference (``"inference"``: eval mode, ``no_grad``, all
    ``directions`` in chunks of views), on a random ``(1, 1, D, H, W)`` volume; bf16 autocast on CUDA."""
    model = Random25DUNet(1, 1, directions=directions, views=min(views, directions)).to(device)
    volume = torch.randn(1, 1, *shape, device=device)
    if kind == "inference":
        model.eval()

        def infer():
            with torch.no_grad(), autocast(device):
                return model(volume)

        return infer
    model.train()
    label = (volume > 1.5).float()
    loss_fn = DiceLoss(include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def step():
        optimizer.zero_grad(set_to_none=True)
        angles = random_directions(model.config.directions, model.config.views, generator).to(device)
        with autocast(device):
            loss = loss_fn(model(volume, angles).float(), label)
        loss.backward()
        optimizer.step()

    return step


def operator_call(name: str, shape: tuple[int, int, int], views: int, device: torch.device):
    """A closure running one operator of :mod:`vol25d.ops` on random float32 data with ``views`` equally
    spaced directions. Backward rows run their forward once here (mip's with its argmax) and time
    ``torch.autograd.grad`` alone."""
    depth, height, width = shape
    angles = equal_angles(views, device=device)
    detector = default_detector(height, width)
    if name in ("mip", "mip backward", "project"):
        volume = torch.randn(1, 1, *shape, device=device, requires_grad=name == "mip backward")
        if name == "project":
            return lambda: project(volume, angles, detector)
        if name == "mip":
            return lambda: mip(volume, angles, detector)
        out = mip(volume, angles, detector)
        grad = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, volume, grad, retain_graph=True)
    sinogram = torch.randn(1, 1, views, depth, detector, device=device, requires_grad=name.endswith("backward"))
    if name == "backproject":
        return lambda: backproject(sinogram, angles, (height, width))
    out = backproject(sinogram, angles, (height, width))
    grad = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, sinogram, grad, retain_graph=True)


def grid_sample_grids(shape: tuple[int, int, int], views: int, device: torch.device) -> torch.Tensor:
    """The MIP's own ray samples (:func:`~vol25d.geometry.ray_samples`) as ``grid_sample`` grids
    ``(p, S, T, 2)`` in ``align_corners=True`` coordinates."""
    _, height, width = shape
    h, w = ray_samples(equal_angles(views, dtype=torch.float64, device=device), height, width, default_detector(height, width))
    return torch.stack([2 * w / (width - 1) - 1, 2 * h / (height - 1) - 1], dim=-1).float()


def grid_sample_mip(volume: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Baseline MIP, rotate then reduce: every view resamples the volume on its rotated ray grid with
    ``F.grid_sample`` (bilinear in ``(h, w)``, the ``D`` slices as channels) and takes the max along the rays.

    Zero padding stands for the volume's minimum (the volume is shifted by it), so samples outside count
    as the minimum and an empty ray gives it, as in :func:`vol25d.ops.mip` (which ignores them instead:
    the two differ only next to the border). ``(1, 1, D, H, W)``, grids ``(p, S, T, 2)`` →
    ``(1, 1, p, D, S)``.
    """
    low = volume.amin()
    planes = (volume - low)[:, 0]
    views = [F.grid_sample(planes, grid[None], mode="bilinear", align_corners=True).amax(-1) for grid in grids]
    return (torch.stack(views, dim=1) + low)[:, None]


@contextlib.contextmanager
def ops_backend(name: str):
    """Run :mod:`vol25d.ops` on the ``VOL25D_OPS_BACKEND`` ``name`` inside the block."""
    previous = os.environ.get("VOL25D_OPS_BACKEND")
    os.environ["VOL25D_OPS_BACKEND"] = name
    try:
        yield
    finally:
        if previous is None:
            del os.environ["VOL25D_OPS_BACKEND"]
        else:
            os.environ["VOL25D_OPS_BACKEND"] = previous


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a 1 GiB buffer."""
    from bench_ops_kernels import copy_bandwidth as measure

    return measure(torch.empty(2**28, device=device))


def fp32_flops(device: torch.device) -> float:
    """FP32 arithmetic throughput (FLOP/s, an FMA counted as 2) of ``torch.mm`` on 8192² matrices with
    TF32 off: the CUDA cores' FMA rate."""
    from bench_ops_kernels import cuda_time

    n = 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        seconds = cuda_time(lambda: torch.mm(a, b))
    finally:
        torch.set_float32_matmul_precision(precision)
    return 2 * n**3 / seconds


def floors(name: str, shape: tuple[int, int, int], views: int, bandwidth: float, flops: float) -> tuple[float, float]:
    """``(per-view floor, sample floor)`` in seconds for one operator call (see the report's definitions)."""
    from bench_ops_kernels import per_view_floor

    depth, height, width = shape
    detector = default_detector(height, width)
    per_view = views * per_view_floor(torch.empty(1, *shape, device="meta"), detector, bandwidth)
    unit, taps = SAMPLES[name]
    samples = views * depth * (height * width if unit == "voxel" else detector)
    return per_view, samples * taps * 2 / flops


# ----------------------------------------------------------------------------------------------------------
# The tables
# ----------------------------------------------------------------------------------------------------------


def size_label(shape: tuple[int, int, int]) -> str:
    depth, height, width = shape
    return f"{height}³" if depth == height == width else f"{height}×{width}×{depth}"


def fmt_time(timing: Timing, repeats: int) -> str:
    seconds = timing.seconds
    if seconds >= 1:
        text = f"{seconds:.3g} s"
    elif seconds >= 1e-3:
        text = f"{seconds * 1e3:.3g} ms"
    else:
        text = f"{seconds * 1e6:.3g} µs"
    if not timing.warm_up:
        return f"{text} (1 run, no warm-up)"
    return text if timing.runs >= repeats else f"{text} ({timing.runs} run{'s' if timing.runs > 1 else ''})"


def fmt_bytes(count: int | None) -> str:
    if count is None:
        return "not measured (no /proc/self/clear_refs)"
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def fmt_ratio(value: float) -> str:
    return f"{value:,.0f}×" if value >= 100 else f"{value:.3g}×"


def cpu_skips(settings: Settings, kind: str, shape: tuple[int, int, int]) -> bool:
    return not settings.all_cpu and shape[0] * shape[1] * shape[2] > CPU_MAX_VOXELS[kind]


def timed(what: str, make, device: torch.device, repeats: int) -> Timing:
    """:func:`median_seconds` of the closure ``make()`` builds, logged as ``what``."""
    log.info("%s on %s …", what, device.type)
    timing = median_seconds(make(), device, repeats)
    log.info("  %s", fmt_time(timing, repeats))
    return timing


def measure_model(kind: str, shape, views: int, directions: int, device: torch.device, repeats: int):
    """``(Timing, peak bytes)`` of one model cell (see :func:`model_call`), after one tiny (16³) call has loaded
    the libraries' code (oneDNN/cuDNN kernels, Triton compiles) so it does not count as memory."""
    model_call(kind, (16, 16, 16), 2, 4, device)()
    with PeakMemory(device) as peak:
        timing = median_seconds(model_call(kind, shape, views, directions, device), device, repeats)
    return timing, peak.bytes


def _measure_model_on_cpu(threads: int, *args) -> tuple:
    torch.set_num_threads(threads)
    timing, peak = measure_model(*args)
    return astuple(timing), peak


def measure_model_fresh(*args):
    """:func:`measure_model` on the CPU in a new process, forked from a server that has only imported
    torch, MONAI and vol25d: a fresh allocator, so the peak does not depend on what ran before (glibc keeps
    freed memory and raises its mmap threshold), and no OpenMP threads forked."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "torch._dynamo", "monai.losses", "vol25d.model"])
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        timing, peak = pool.submit(_measure_model_on_cpu, torch.get_num_threads(), *args).result()
    return Timing(*timing), peak


def model_rows(settings: Settings, device: torch.device, other: str) -> list[list[str]]:
    """Rows of the model table: per volume, a training step per ``p`` and an inference."""
    rows = []
    for shape in settings.sizes:
        cells = [("train", p, f"path-1 training step, p = {p}") for p in settings.train_views]
        cells.append(("inference", settings.views, f"inference, m = {settings.views} (chunks of {DEFAULT_VIEW_CHUNK} views)"))
        for kind, views, label in cells:
            if device.type == "cpu" and cpu_skips(settings, kind, shape):
                rows.append([size_label(shape), label, TOO_SLOW, TOO_SLOW, other, other])
                continue
            log.info("model %s, %s on %s …", size_label(shape), label, device.type)
            measure = measure_model_fresh if device.type == "cpu" else measure_model
            timing, peak = measure(kind, shape, views, settings.views, device, settings.repeats)
            measured = [fmt_time(timing, settings.repeats), fmt_bytes(peak)]
            log.info("  %s, peak memory %s", *measured)
            rows.append([size_label(shape), label, *(measured + [other] * 2 if device.type == "cpu" else [other] * 2 + measured)])
    return rows


def operator_timing(name: str, shape, settings: Settings, device: torch.device) -> Timing:
    what = f"{name} {size_label(shape)} ({os.environ.get('VOL25D_OPS_BACKEND', 'auto')} kernels)"
    return timed(what, lambda: operator_call(name, shape, settings.views, device), device, settings.repeats)


def baseline_timing(shape, settings: Settings, device: torch.device) -> Timing:
    def make():
        volume = torch.randn(1, 1, *shape, device=device)
        grids = grid_sample_grids(shape, settings.views, device)
        return lambda: grid_sample_mip(volume, grids)

    return timed(f"grid_sample MIP {size_label(shape)}", make, device, settings.repeats)


def cpu_operator_rows(settings: Settings) -> list[list[str]]:
    """Rows of the CPU operator table: the selected kernels and, for the MIP, the grid_sample baseline."""
    cpu, rows = torch.device("cpu"), []
    for shape in settings.sizes:
        for name in OPERATORS:
            if cpu_skips(settings, name, shape):
                rows.append([name, size_label(shape), TOO_SLOW] + [TOO_SLOW if name == "mip" else NOT_APPLICABLE] * 2)
                continue
            timing = operator_timing(name, shape, settings, cpu)
            extra = [NOT_APPLICABLE] * 2
            if name == "mip":
                extra = [TOO_SLOW] * 2
                if not cpu_skips(settings, "grid_sample", shape):
                    base = baseline_timing(shape, settings, cpu)
                    extra = [fmt_time(base, settings.repeats), fmt_ratio(base.seconds / timing.seconds)]
            rows.append([name, size_label(shape), fmt_time(timing, settings.repeats), *extra])
    return rows


def gpu_operator_rows(settings: Settings, device: torch.device, calibration: dict) -> list[list[str]]:
    """Rows of the GPU operator table: selected (Triton) and reference kernels, their ratio, the two floors
    and, for the MIP, the grid_sample baseline."""
    rows = []
    for shape in settings.sizes:
        for name in OPERATORS:
            fast = operator_timing(name, shape, settings, device)
            with ops_backend("reference"):
                reference = operator_timing(name, shape, settings, device)
            per_view, sample = floors(name, shape, settings.views, calibration["bandwidth"], calibration["flops"])
            row = [name, size_label(shape), fmt_time(fast, settings.repeats), fmt_time(reference, settings.repeats)]
            row += [fmt_ratio(reference.seconds / fast.seconds), fmt_ratio(fast.seconds / per_view), fmt_ratio(fast.seconds / sample)]
            if name == "mip":
                base = baseline_timing(shape, settings, device)
                row += [fmt_time(base, settings.repeats), fmt_ratio(base.seconds / fast.seconds)]
            else:
                row += [NOT_APPLICABLE] * 2
            rows.append(row)
            torch.cuda.empty_cache()
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


MODEL_HEADER = ["volume (H×W×D)", "step", "CPU time", "CPU peak memory", "GPU time", "GPU peak memory"]
CPU_OPS_HEADER = ["operator", "volume (H×W×D)", "CPU time", "grid_sample MIP, CPU", "speed-up over grid_sample"]
GPU_OPS_HEADER = [
    "operator", "volume (H×W×D)", "GPU time (selected kernels)", "GPU time (reference kernels)",
    "speed-up over reference", "× per-view floor", "× sample floor", "grid_sample MIP, GPU",
    "speed-up over grid_sample",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------


def memory_total() -> str:
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB RAM"
    return "RAM unknown"


def software() -> str:
    try:
        import triton

        triton_version = f"Triton {triton.__version__}"
    except ImportError:
        triton_version = "Triton not importable"
    return (
        f"Python {platform.python_version()}, torch {torch.__version__}, MONAI {monai.__version__}, {triton_version}, "
        f"vol25d {vol25d.__version__} at commit {commit()}"
    )


def machine_lines(device: torch.device, loads: tuple[float, float], note: str | None) -> list[str]:
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    lines = [f"- CPU: {cpu_name()}, {cores} cores, torch on {threads} thread{'s' * (threads > 1)}; {memory_total()}; {platform.platform()}"]
    if max(loads) >= cores / 2:
        lines.append(
            f"- Other work shared the CPU: load average {loads[0]:.1f} at the start and {loads[1]:.1f} at the end "
            f"on {cores} cores, so CPU times are upper bounds and noisy."
        )
    if note:
        lines.append(f"- Note: {note}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    else:
        lines.append(f"- GPU: {torch.cuda.get_device_name()}, not used (--device cpu)" if torch.cuda.is_available() else "- GPU: none")
    return lines + [f"- Software: {software()}"]


def definitions(settings: Settings, calibration: dict) -> list[str]:
    if calibration:
        calibration_text = (
            f"{calibration['bandwidth'] / 1e9:.0f} GB/s device-to-device copy of 1 GiB (bytes read + written); "
            f"{calibration['flops'] / 1e12:.1f} TFLOP/s fp32 `torch.mm` of 8192² matrices with TF32 off"
        )
    else:
        calibration_text = "not measured (no GPU in this run)"
    return [
        "- **Time**: median wall time of up to `--repeats` runs after one warm-up (which also compiles the Triton "
        f"kernels); a cell stops early once its runs would pass {CELL_BUDGET_S:.0f} s and then says how many it "
        f"took. On the CPU a call longer than {CELL_BUDGET_S:.0f} s is timed once, its warm-up serving as the run. "
        "CUDA runs are timed with CUDA events.",
        "- **Peak memory** (model rows): the most memory in use at once while the model, its input volume (and "
        "label and optimiser) are made and the warm-up and timed runs go, above what was in use before — so it "
        "counts the input, the weights, gradients and AdamW state. *CPU*: each cell runs in a new process forked "
        "from a server that has only imported the libraries, so the figure does not depend on what ran before "
        "(glibc keeps freed memory resident and raises its mmap threshold); the kernel's exact resident-set "
        "high-water mark (`VmHWM`, reset by writing 5 to `/proc/self/clear_refs` at the start) less the RSS at "
        "the start, after `gc.collect()` and `malloc_trim(0)` — no sampling, so short spikes are not missed. "
        "*GPU*: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, less the memory allocated "
        "at the start. One tiny (16³) step or inference first loads the libraries' code, outside the measurement.",
        f"- **Training step**: `Random25DUNet(1, 1, directions={settings.views}, views=p)` (default U, F and T) in "
        "train mode: forward, MONAI `DiceLoss` on the 3-D output against a fixed random mask, backward, AdamW "
        "step; the input needs no gradient. **Inference**: the same model in eval mode under `no_grad`, all m "
        "directions, `view_chunk` views at a time. Batch 1; bf16 autocast on CUDA, float32 on the CPU.",
        f"- **Operators**: the public `vol25d.ops` functions on float32, batch 1, {settings.views} equally spaced "
        "directions, the default detector. *Selected kernels* are those `vol25d.ops.backend` picks (Triton for "
        "CUDA tensors, `vol25d.ops.cpu_kernels` for CPU ones); *reference kernels* the same calls under "
        "`VOL25D_OPS_BACKEND=reference` (`vol25d/ops/reference.py`, same device). Backward rows time "
        "`torch.autograd.grad` alone after one forward (mip's keeping its argmax); `backproject backward` is "
        "`project`.",
        "- **Per-view floor** (GPU): views × (bytes of the volume + bytes of one view) ÷ copy bandwidth "
        "(`per_view_floor` of `experiments/bench_ops_kernels.py`): streaming the volume from DRAM once per view. "
        "One formula for every operator (back-projection writes the volume instead of reading it); below 1× a "
        "kernel serves several views from one read.",
        "- **Sample floor** (GPU): samples × taps × 2 FLOP ÷ fp32 throughput. A bilinear sample (mip) is a 4-term "
        "dot product of corners and weights (4 FMAs), a linear one (project, backproject) 2 FMAs; one sample "
        "per voxel per view (rays one bin apart, samples one voxel apart), except mip's backward, which touches "
        "one sample per ray. Weight and address arithmetic are not counted: a lower bound.",
        f"- **GPU calibration**: {calibration_text}.",
        "- **grid_sample baseline** (mip rows): rotate then reduce — per view, `F.grid_sample` (bilinear, "
        "`align_corners=True`, the D slices as channels) of the volume on that view's ray samples "
        "(`vol25d.geometry.ray_samples`, the samples `mip` takes), then `amax` along the rays; zero padding of "
        "the volume shifted by its minimum stands for the samples `mip` ignores. Speed-up = baseline time ÷ "
        "operator time.",
    ]


def report(settings: Settings, device: torch.device, argv: list[str], sections: dict) -> str:
    skipped = ", ".join(f"{kind} above {size_label((round(v ** (1 / 3)),) * 3)}" for kind, v in CPU_MAX_VOXELS.items())
    other = "GPU" if device.type == "cpu" else "CPU"
    lines = [
        "# vol25d: speed and memory of the model and its operators",
        "",
        f"Written by `python experiments/bench_ops.py {shlex.join(argv)}` on {utc_now()}, measuring on the "
        f"{device.type.upper()}; the {other} columns say \"not measured\".",
        "",
        "## Machine",
        "",
        *sections["machine"],
        "",
        "## Settings",
        "",
        f"- Volumes H×W×D (the tensor is (1, 1, D, H, W)): {', '.join(size_label(s) for s in settings.sizes)}; "
        "random normal float32 input.",
        f"- Model: m = {settings.views} directions, p ∈ {{{', '.join(map(str, settings.train_views))}}} in training; "
        f"operators: {settings.views} views; at most {settings.repeats} timed run{'s' * (settings.repeats > 1)} per cell.",
        f"- Kernels `vol25d.ops.backend` selects for {device.type.upper()} tensors: `{sections['kernels']}`.",
        f"- CPU cells skipped unless `--all-cpu`: {skipped}.",
        "",
        "## Model: a path-1 training step and whole-volume inference (issue 3)",
        "",
        markdown_table(MODEL_HEADER, sections["model"]),
        "",
        "## Operators on the CPU (issue 6)",
        "",
        markdown_table(CPU_OPS_HEADER, sections["cpu_ops"]),
        "",
        "## Operators on the GPU (issue 6)",
        "",
        markdown_table(GPU_OPS_HEADER, sections["gpu_ops"]),
        "",
        "## Definitions",
        "",
        *sections["definitions"],
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int, int]:
    """``"128"`` → ``(128, 128, 128)``; ``"512x512x256"`` (``H×W×D``) → ``(D, H, W) = (256, 512, 512)``."""
    try:
        values = [int(part) for part in text.lower().replace("×", "x").split("x")]
    except ValueError:
        values = []
    if len(values) not in (1, 3) or min(values) < 8:
        raise argparse.ArgumentTypeError(f"a size is N (a cube) or HxWxD, each ≥ 8; got {text!r}")
    height, width, depth = values * 3 if len(values) == 1 else values
    return depth, height, width


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None, help="N (cube) or HxWxD; default 128 256 512x512x256")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per cell, after one warm-up (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default experiments/results/bench_ops.md)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and views, one run: checks the script, not the speed")
    parser.add_argument("--all-cpu", action="store_true", help="run every size on the CPU too (minutes per call, tens of GB)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--note", default=None, help="a line for the report's machine section")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1; got {args.repeats}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be ≥ 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.smoke:
        out = args.out or Path(tempfile.gettempdir()) / "vol25d_bench_ops_smoke.md"
        if out.resolve().is_relative_to(RESULTS):
            parser.error(f"--smoke writes no figures into {RESULTS}; give --out a temporary file (got {out})")
        sizes = args.sizes or [parse_size(s) for s in SMOKE_SIZES]
        settings = Settings(tuple(sizes), views=8, train_views=(2, 4), repeats=1, all_cpu=args.all_cpu)
    else:
        out = args.out or RESULTS / "bench_ops.md"
        sizes = args.sizes or [parse_size(s) for s in DEFAULT_SIZES]
        settings = Settings(tuple(sizes), repeats=args.repeats, all_cpu=args.all_cpu)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda asked for but no CUDA GPU is available; use --device cpu")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")

    load_start = os.getloadavg()[0]
    sections = {"kernels": kernels_for(torch.empty(1, device=device)).__name__}
    calibration = {}
    if device.type == "cuda":
        if not sections["kernels"].endswith("triton_kernels"):
            log.warning("the kernels selected for CUDA tensors are %s, not Triton", sections["kernels"])
        calibration = {"bandwidth": copy_bandwidth(device), "flops": fp32_flops(device)}
        log.info("copy bandwidth %.0f GB/s, fp32 %.1f TFLOP/s", calibration["bandwidth"] / 1e9, calibration["flops"] / 1e12)
        other = "not measured (--device cuda)"
    else:
        other = "not measured (--device cpu)" if torch.cuda.is_available() else "not measured (no GPU)"

    sections["model"] = model_rows(settings, device, other)
    missing = [[name, size_label(s)] for s in settings.sizes for name in OPERATORS]
    if device.type == "cuda":
        sections["cpu_ops"] = [row + [other] * 3 for row in missing]
        sections["gpu_ops"] = gpu_operator_rows(settings, device, calibration)
    else:
        sections["cpu_ops"] = cpu_operator_rows(settings)
        sections["gpu_ops"] = [row + [other] * 7 for row in missing]
    sections["machine"] = machine_lines(device, (load_start, os.getloadavg()[0]), args.note)
    sections["definitions"] = definitions(settings, calibration)
    text = report(settings, device, argv, sections)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()

"""Where the model runs: the device a user names, its CPU threads, and the mixed precision that goes with it.

Imports torch only, so prediction does not pull in the training stack.
"""

from __future__ import annotations

import logging
import os
import re

import torch

from vol25d.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["resolve_device", "amp_enabled", "autocast", "full_precision", "AMP_DEVICE_TYPES", "set_threads",
           "auto_threads"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# Device types on which ``amp=True`` turns bf16 autocast on. CPU autocast is slow on most CPUs, so only CUDA;
# the tests add "cpu" to run the CUDA branch's mixed precision (and the ops CUDA refuses) on a CPU.
AMP_DEVICE_TYPES: tuple[str, ...] = ("cuda",)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as named.

    Raises:
        InputError: any other name (``"gpu"``), or CUDA asked for where there is none or not that many GPUs.
    """
    name = str(name)
    if not _DEVICE.match(name):
        raise InputError(f"device {name!r} is not one vol25d knows; use auto, cpu, cuda or cuda:N (e.g. --device cuda)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); pick one of them")
    return torch.device(name)


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(cpus: int | None = None) -> int | None:
    """The torch CPU thread count ``--threads auto`` picks: 1 on a machine with at most 2 CPUs, else ``None``
    (torch's own default, one per core); ``None`` too where ``OMP_NUM_THREADS`` is set, which torch follows.

    On two cores shared with other jobs, two threads made a training step many times slower than one, with the
    reference kernels and with the CPU kernels alike (the figures: docs/benchmarks.md, "CPU threads", and
    experiments/results/bench_threads.md); an idle 2-core machine and more cores were not measured, so above 2
    CPUs torch's default stands.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cpus = _available_cpus() if cpus is None else cpus
    return 1 if cpus <= 2 else None


def set_threads(threads: str | int = "auto") -> int:
    """Set torch's intra-op CPU threads: ``"auto"`` (:func:`auto_threads`) or a number ≥ 1. Returns the count set.

    Raises:
        InputError: ``threads`` is neither ``"auto"`` nor a positive integer.
    """
    if threads == "auto" or threads is None:
        chosen = auto_threads()
    else:
        try:
            chosen = int(threads)
        except (TypeError, ValueError):
            chosen = 0
        if chosen < 1 or str(threads).strip() != str(chosen):
            raise InputError(f"--threads must be auto or a whole number ≥ 1; got {threads!r}")
    if chosen is not None:
        torch.set_num_threads(chosen)
    log.debug("torch CPU threads: %d", torch.get_num_threads())
    return torch.get_num_threads()


def amp_enabled(device: torch.device, requested: bool = True) -> bool:
    """Whether ``requested`` mixed precision runs on ``device``: bf16 autocast, on CUDA GPUs that compute in
    bf16 (Ampere, sm 8.0, and later). Older GPUs (T4, V100) run float32: CUDA autocast refuses bf16 there,
    and float16 would need loss scaling."""
    if not requested or device.type not in AMP_DEVICE_TYPES:
        return False
    if device.type == "cuda" and not _cuda_bf16(device):
        global _warned_bf16
        if not _warned_bf16:
            log.warning("%s has no bf16 arithmetic: mixed precision is off, running in float32",
                        torch.cuda.get_device_name(device))
            _warned_bf16 = True
        return False
    return True


_warned_bf16 = False


def _cuda_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes natively in bf16 (compute capability ≥ 8.0)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on ``device`` when ``enabled`` and :func:`amp_enabled`; a no-op context otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_enabled(device, enabled))


def full_precision(device: torch.device | str):
    """A context with autocast off on ``device``: losses and metrics run in float32 inside an autocast
    region (CUDA autocast refuses ``binary_cross_entropy`` outright)."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    return torch.autocast(device_type=device_type, enabled=False)

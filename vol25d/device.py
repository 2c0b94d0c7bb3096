"""Where the model runs: the device a user names, and the mixed precision that goes with it.

Imports torch only, so prediction does not pull in the training stack.
"""

from __future__ import annotations

import logging

import torch

from vol25d.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["resolve_device", "amp_enabled", "autocast", "full_precision", "AMP_DEVICE_TYPES"]

# Device types on which ``amp=True`` turns bf16 autocast on. CPU autocast is slow on most CPUs, so only CUDA;
# the tests add "cpu" to run the CUDA branch's mixed precision (and the ops CUDA refuses) on a CPU.
AMP_DEVICE_TYPES: tuple[str, ...] = ("cuda",)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


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

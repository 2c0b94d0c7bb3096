"""Where the model runs: the device a user names, and the mixed precision that goes with it.

Imports torch only, so prediction does not pull in the training stack.
"""

from __future__ import annotations

import torch

from vol25d.errors import InputError

__all__ = ["resolve_device", "autocast"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA when ``enabled``; a no-op context on any other device."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")

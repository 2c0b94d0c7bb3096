"""Which kernels run: the Triton kernels for CUDA tensors when Triton is importable, the fast CPU kernels
(:mod:`vol25d.ops.cpu_kernels`) for CPU tensors, the reference PyTorch kernels everywhere else.

``VOL25D_OPS_BACKEND`` overrides the choice: ``reference`` forces the reference PyTorch kernels (the oracle),
``cpu`` the CPU kernels (CPU tensors only), ``triton`` the Triton kernels (on CPU tensors that needs
``TRITON_INTERPRET=1``, which is how the tests check them).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import torch

from vol25d.ops import cpu_kernels, reference

_BACKENDS = ("auto", "reference", "cpu", "triton")


@functools.lru_cache(maxsize=1)
def _triton_module() -> ModuleType | None:
    try:
        from vol25d.ops import triton_kernels
    except ImportError:
        return None
    return triton_kernels


def kernels_for(tensor: torch.Tensor) -> ModuleType:
    """The module of raw kernels (``project``, ``backproject``, ``backproject_explained``, ``mip``,
    ``mip_backward``) for ``tensor``."""
    choice = os.environ.get("VOL25D_OPS_BACKEND", "auto").lower()
    if choice not in _BACKENDS:
        raise ValueError(f"VOL25D_OPS_BACKEND must be one of {_BACKENDS}; got {choice!r}")
    if choice == "reference":
        return reference
    if choice == "cpu":
        return cpu_kernels
    triton = _triton_module()
    if choice == "triton":
        if triton is None:
            raise ValueError("VOL25D_OPS_BACKEND=triton but Triton is not importable; install triton")
        return triton
    if tensor.is_cuda and triton is not None:
        return triton
    return cpu_kernels if tensor.device.type == "cpu" else reference

"""Which kernels run — the Triton kernels, the CPU kernels or the reference PyTorch kernels — and the check
that keeps a failing Triton kernel from ending a run.

``VOL25D_OPS_BACKEND`` (the CLI's ``--ops-backend``, which sets it) picks them:

- ``auto`` (the default): the Triton kernels for CUDA tensors when Triton imports, the CPU kernels
  (:mod:`vol25d.ops.cpu_kernels`) for CPU tensors, the reference kernels for everything else. The first call
  of each Triton kernel on a device (per dtype) first runs it on a small input (:func:`self_check`) and
  compares it with the reference kernel; when it raises or disagrees, or a later call raises, that device
  switches to the reference kernels for the rest of the process, with one logged warning that names the error.
- ``triton``: the Triton kernels as they are, with no self-check (for measuring them); a kernel that raises
  is an :class:`~vol25d.errors.InputError` (on CPU tensors they need ``TRITON_INTERPRET=1``, which is how the
  tests run them).
- ``cpu``: the CPU kernels for CPU tensors (other devices run the reference kernels).
- ``reference``: the reference kernels, everywhere (the oracle the other kernels are tested against).

:func:`resolve` checks every kernel on a device at once and :func:`describe` says, without checking, which
kernels run there: what the training log, the run's ``config.yaml``, checkpoints and ``vol25d info`` show.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from types import ModuleType

import torch

from vol25d.errors import InputError
from vol25d.ops import cpu_kernels, reference
from vol25d.settings import OPS_BACKENDS

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "KERNELS", "KernelMismatch", "requested", "kernels_for", "resolve", "describe", "here", "self_check",
           "forget"]

BACKENDS = OPS_BACKENDS
# The raw kernels the autograd functions of vol25d.ops call (forward and backward).
KERNELS = ("project", "backproject", "backproject_explained", "mip", "mip_backward")

# Self-check tolerances, relative to the largest magnitude of the reference output: float32 against the
# reference's own summation order; bf16/fp16 outputs carry 8 (11) significant bits.
_RTOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 3e-2}
_ARGMAX_SHARE = 0.05  # rays of the MIP check whose winning sample may differ (near-ties)

_passed: set[tuple[str, str, torch.dtype]] = set()  # (kernel, device, dtype) whose self-check passed
_fallen: dict[str, str] = {}  # device → why it runs the reference kernels (auto)
_guards: dict[tuple[str, bool, int], "_Checked"] = {}


def requested() -> str:
    """``VOL25D_OPS_BACKEND``: ``auto`` (unset), ``triton``, ``cpu`` or ``reference``."""
    choice = os.environ.get("VOL25D_OPS_BACKEND", "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise InputError(f"VOL25D_OPS_BACKEND={choice!r} is not a kernel backend; set it (or --ops-backend) to "
                         f"{', '.join(BACKENDS)}")
    return choice


@functools.lru_cache(maxsize=1)
def _candidate() -> tuple[ModuleType | None, str | None]:
    """The Triton kernels' module, or ``None`` and why it does not import."""
    try:
        from vol25d.ops import triton_kernels
    except Exception as error:  # noqa: BLE001 — ImportError, or a broken Triton install failing otherwise
        return None, _one_line(error)
    return triton_kernels, None


def _triton_device(device: torch.device) -> bool:
    """Whether ``auto`` runs the Triton kernels on ``device``: CUDA devices."""
    return device.type == "cuda"


def _key(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def kernels_for(tensor: torch.Tensor):
    """The raw kernels (``project``, ``backproject``, ``backproject_explained``, ``mip``, ``mip_backward``)
    for ``tensor``: :mod:`vol25d.ops.reference`, :mod:`vol25d.ops.cpu_kernels` for CPU tensors, or the Triton
    kernels behind the self-check and fallback of this module."""
    choice = requested()
    if choice == "reference":
        return reference
    if choice == "cpu" or (choice == "auto" and not _triton_device(tensor.device)):
        return cpu_kernels if tensor.device.type == "cpu" else reference
    device = _key(tensor.device)
    if choice == "auto" and device in _fallen:
        return reference
    module, why = _candidate()
    if module is None:
        if choice == "triton":
            raise InputError(f"the Triton kernels were asked for (--ops-backend/VOL25D_OPS_BACKEND triton) but do not "
                             f"import ({why}); install triton, or use --ops-backend auto or reference")
        return reference
    forced = choice == "triton"
    guard = _guards.get((device, forced, id(module)))
    if guard is None:
        guard = _guards[(device, forced, id(module))] = _Checked(module, device, forced)
    return guard


class _Checked:
    """The kernels of ``module`` on one device. ``auto``: each self-checked on its first call per dtype, and
    a failure falls back to the reference kernels; ``triton`` (``forced``): unchecked, and a kernel that
    raises is an :class:`InputError`."""

    def __init__(self, module: ModuleType, device: str, forced: bool):
        self.module, self.device, self.forced = module, device, forced
        self.__name__ = module.__name__
        for name in KERNELS:
            setattr(self, name, functools.partial(self._call, name))

    def _call(self, name: str, *args, **kwargs):
        if not self.forced and self.device in _fallen:
            return getattr(reference, name)(*args)  # (keyword arguments only tune the Triton kernels)
        dtype = args[0].dtype
        try:
            self.check(name, dtype, args[0].device)
            return getattr(self.module, name)(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as error:  # noqa: BLE001 — any failure of a kernel means "not on this device"
            self._failed(f"{name} ({str(dtype).removeprefix('torch.')}): {_one_line(error)}", error)
        return getattr(reference, name)(*args)

    def check(self, name: str, dtype: torch.dtype, device) -> None:
        """Self-check kernel ``name`` in ``dtype`` on ``device`` unless it passed already (float64 goes to the
        reference kernels inside the Triton module, and ``triton`` is never checked). Raises what the check
        raised."""
        if self.forced or dtype not in _RTOL or (name, self.device, dtype) in _passed:
            return
        self_check(self.module, name, device, dtype)
        _passed.add((name, self.device, dtype))

    def _failed(self, reason: str, error: Exception) -> None:
        if self.forced:
            raise InputError(f"the Triton kernel {reason} failed on {self.device}; use --ops-backend auto (falls back to "
                             "the reference kernels) or reference (VOL25D_OPS_BACKEND)") from error
        if self.device not in _fallen:
            _fallen[self.device] = reason
            log.warning("the Triton kernels failed on %s (%s); the reference PyTorch kernels run there from now on "
                        "(--ops-backend reference skips Triton)", self.device, reason)


class KernelMismatch(RuntimeError):
    """A Triton kernel's self-check output differs from the reference kernel's."""


def self_check(module, name: str, device, dtype: torch.dtype = torch.float32) -> None:
    """Run ``module``'s kernel ``name`` on a small input (2 × 3 × 9 × 7 voxels, 4 directions including 0 and
    π/2) in ``dtype`` on ``device`` and compare it with the reference kernel on the same (rounded) values in
    float32; :class:`KernelMismatch` when it differs by more than the dtype's tolerance, or whatever the
    kernel raises. The backward kernel ``mip_backward`` gets the reference's argmax."""
    from vol25d.geometry import default_detector

    device = torch.device(device)
    depth, height, width, count = 3, 9, 7, 4
    detector = default_detector(height, width)
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(2, depth, height, width, generator=generator)
    views = torch.randn(2, count, depth, detector, generator=generator)
    angles = torch.tensor([0.0, math.pi / 2, 0.7, -2.1]).to(device)
    low = volume.to(dtype).float().to(device), views.to(dtype).float().to(device)  # the rounded values, float32
    volume, views = low[0].to(dtype), low[1].to(dtype)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        if name == "project":
            pairs = [(module.project(volume, angles, detector), reference.project(low[0], angles, detector))]
        elif name == "backproject":
            pairs = [(module.backproject(views, angles, height, width),
                      reference.backproject(low[1], angles, height, width))]
        elif name == "backproject_explained":
            image_views = reference.mip(low[0][:1], angles, detector, False)[0].to(dtype).float()
            rest = (low[0][:1].to(dtype), angles, torch.tensor([0.1, 0.0], device=device),
                    torch.tensor([0.3, 0.7], device=device), height, width)
            pairs = [(module.backproject_explained(views, image_views.to(dtype), *rest),
                      reference.backproject_explained(low[1], image_views, low[0][:1], *rest[1:]))]
        elif name == "mip":
            actual, argmax = module.mip(volume, angles, detector, True)
            expected, expected_argmax = reference.mip(low[0], angles, detector, True)
            if argmax is None or argmax.shape != expected_argmax.shape:
                raise KernelMismatch(f"argmax of shape {None if argmax is None else tuple(argmax.shape)}, not "
                                     f"{tuple(expected_argmax.shape)}")
            share = float((argmax.long() != expected_argmax.long()).float().mean())
            if share > _ARGMAX_SHARE:
                raise KernelMismatch(f"the winning sample differs from the reference on {share:.0%} of the rays")
            pairs = [(actual, expected)]
        elif name == "mip_backward":
            argmax = reference.mip(low[0], angles, detector, True)[1]
            pairs = [(module.mip_backward(views, argmax, angles, height, width),
                      reference.mip_backward(low[1], argmax, angles, height, width))]
        else:
            raise ValueError(f"no self-check for kernel {name!r}; the kernels are {KERNELS}")
        for actual, expected in pairs:
            if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
                shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
                raise KernelMismatch(f"output of shape {shape}, not {tuple(expected.shape)}")
            scale = float(expected.abs().max().clamp_min(1e-30))
            error = float((actual.float() - expected).abs().max()) / scale
            if not error <= _RTOL[dtype]:  # (a NaN fails too)
                raise KernelMismatch(f"differs from the reference by {error:.2g} of its largest value (tolerance "
                                     f"{_RTOL[dtype]:g}) on a {depth}×{height}×{width} check")


def resolve(device) -> str:
    """Self-check every kernel on ``device`` now (float32) where ``auto`` would run the Triton kernels, and
    return :func:`describe` of it."""
    device = torch.device(device)
    kernels = kernels_for(torch.empty(0, device=device))
    if isinstance(kernels, _Checked):
        for name in KERNELS:
            if kernels.device in _fallen and not kernels.forced:
                break
            try:
                kernels.check(name, torch.float32, device)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as error:  # noqa: BLE001 — as in a kernel call
                kernels._failed(f"{name} (float32): {_one_line(error)}", error)
    return describe(device)


def describe(device) -> str:
    """Which kernels run on ``device`` as things stand: ``triton``, ``triton (forced)``, ``cpu``, ``cpu
    (forced)``, ``reference``, ``reference (forced)``, ``reference (fallback: <kernel> (<dtype>): <error>)`` or
    ``reference (Triton does not import: <error>)``; ``unavailable: …`` when ``triton`` is asked for and does
    not import."""
    device = torch.device(device)
    choice = requested()
    if choice == "reference":
        return "reference (forced)"
    if choice == "cpu" or (choice == "auto" and not _triton_device(device)):
        return ("cpu (forced)" if choice == "cpu" else "cpu") if device.type == "cpu" else "reference"
    if choice == "auto" and _key(device) in _fallen:
        return f"reference (fallback: {_fallen[_key(device)]})"
    module, why = _candidate()
    if module is None:
        return f"unavailable: Triton is asked for but does not import ({why})" if choice == "triton" else \
            f"reference (Triton does not import: {why})"
    return "triton (forced)" if choice == "triton" else "triton"


def here() -> str:
    """:func:`describe` of the device ``--device auto`` picks, with the device: e.g. ``triton on cuda:0`` or
    ``cpu on cpu`` (nothing is checked: each kernel is checked on its first use)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return f"{describe(device)} on {device}"


def forget() -> None:
    """Forget every self-check, fallback and guard of this process (the next call checks again)."""
    _passed.clear()
    _fallen.clear()
    _guards.clear()

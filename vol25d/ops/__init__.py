"""The projection operators of the random 2.5D U-Net, as functions on tensors.

Volumes are ``(B, C, D, H, W)``; views are ``(B, C, p, D, S)``; ``angles`` is a 1-D tensor of ``p`` radians.
Geometry as in docs/design.md ("Geometry conventions"): rotations about ``D``, ray direction ``(sin θ, cos θ)``
and detector direction ``(cos θ, -sin θ)`` in ``(h, w)``. CUDA tensors use the Triton kernels (each checked
against the reference on its first use; the reference kernels take over on a device where one fails), CPU
tensors the CPU kernels of :mod:`vol25d.ops.cpu_kernels`, anything else the reference kernels
(:mod:`vol25d.ops.backend`, ``VOL25D_OPS_BACKEND``).
"""

from vol25d.ops.backproject import backproject
from vol25d.ops.explained import backproject_explained
from vol25d.ops.mip import mip
from vol25d.ops.project import project
from vol25d.ops.ramp_filter import filter_views, ramp_filter

__all__ = ["mip", "project", "backproject", "backproject_explained", "ramp_filter", "filter_views"]

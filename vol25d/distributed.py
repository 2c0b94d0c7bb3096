"""Training on several processes (one GPU each) as ``torchrun`` launches them: the process group and the
split of the training cases.

``torchrun --nproc_per_node=N -m vol25d train …`` starts ``N`` copies of the command with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`setup`
reads them and joins the group (NCCL on CUDA, gloo on CPU); without them every function here is the
single-process answer (rank 0 of 1), so the training code has one path.

A process group that already exists when :func:`setup` runs (a notebook, a test that called
``init_process_group`` itself) is used as it is and left to whoever made it.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import torch
import torch.distributed as dist

from vol25d.errors import InputError

__all__ = ["launched", "setup", "cleanup", "active", "rank", "world_size", "is_main", "barrier", "shard",
           "mean", "gather", "broadcast"]

# Rank 0 validates and writes checkpoints while the others wait at a barrier: allow it a long epoch end.
TIMEOUT = timedelta(minutes=30)


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started (``WORLD_SIZE`` > 1)."""
    return _env_world_size() > 1


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """Whether a process group is initialised (by :func:`setup` or by the caller)."""
    return dist.is_available() and dist.is_initialized()


def setup(device: torch.device) -> tuple[torch.device, bool]:
    """Join the process group ``torchrun`` describes and pick this process's device.

    Args:
        device: the device asked for (``cuda`` or ``cpu``). Under ``torchrun`` a CUDA process takes the GPU
            of its ``LOCAL_RANK``; in a caller's group without it, the GPU ``device`` names, else the current one.

    Returns:
        ``(device, created)``: the device to train on and whether this call created the process group (then
        :func:`cleanup` destroys it at the end). Without ``torchrun`` and without a group: ``(device, False)``.
    """
    if not launched() and not active():
        return device, False
    if device.type == "cuda":
        if "LOCAL_RANK" in os.environ:
            if device.index is not None and _env_world_size() > 1:
                raise InputError(
                    f"device {str(device)!r} names one GPU but torchrun started {_env_world_size()} processes; "
                    "pass --device cuda (each process takes the GPU of its LOCAL_RANK)"
                )
            local = int(os.environ["LOCAL_RANK"])
            if local >= torch.cuda.device_count():
                raise InputError(f"LOCAL_RANK is {local} but this node has {torch.cuda.device_count()} GPU(s); "
                                 "start at most one process per GPU (torchrun --nproc_per_node)")
            device = torch.device("cuda", local)
        elif device.index is None:  # a caller's group without torchrun: the GPU it picked with set_device
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if active():
        return device, False
    if device.type == "cuda":
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return device, True


def cleanup(created: bool) -> None:
    """Destroy the process group if :func:`setup` created it (``created``); a caller's group is left alone."""
    if created and active():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of processes training together (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process logs, validates and writes the run folder (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if active():
        dist.barrier()


def shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's share of ``indices``, split as ``torch.utils.data.DistributedSampler`` splits them.

    The list is padded by repeating it from the start up to a multiple of ``world``; process ``rank`` takes
    every ``world``-th item from position ``rank``. Every process gets the same number of items, so all take
    the same number of optimiser steps (DDP needs that), and with ``world = 1`` the list comes back as it is.

    Example:
        >>> shard([4, 0, 3, 1, 2], 0, 2), shard([4, 0, 3, 1, 2], 1, 2)
        ([4, 3, 2], [0, 1, 4])
    """
    if not indices:
        return []
    total = math.ceil(len(indices) / world) * world
    padded = (indices * math.ceil(total / len(indices)))[:total]
    return padded[rank::world]


def mean(value: float, device: torch.device) -> float:
    """The mean of ``value`` over all processes (``value`` itself in a single process)."""
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()


def gather(value) -> list:
    """Every process's ``value`` (any picklable object), in rank order, on every process."""
    if not active():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value):
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

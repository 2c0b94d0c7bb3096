"""Where a results file came from: the commit, the machine, the software and the time, for every experiment.

Every script that writes to ``experiments/results/`` records its provenance with :func:`machine_line` (or
the pieces it is made of), so all results files say the same things in the same words: the CPU and its cores,
``OMP_NUM_THREADS``, the GPU, torch and vol25d with the commit of the tree they ran from (and whether that
tree had uncommitted changes), and the UTC time of writing. Scripts in ``experiments/`` import it as
``_provenance`` (their own folder is on ``sys.path`` when run as ``python experiments/NAME.py``); scripts in
a subfolder put ``experiments/`` on ``sys.path`` first.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import subprocess
from pathlib import Path

__all__ = ["commit", "cpu_count", "cpu_name", "gpu_name", "machine_line", "utc_now"]

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows where that file is missing."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpu_name() -> str:
    """The first CUDA GPU's name, or ``"none"``."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def commit() -> str:
    """The short commit of the repository's ``HEAD``, with ``" + uncommitted changes"`` when tracked files
    differ from it; ``"unknown (not a git checkout)"`` outside one."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20)

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode == 0:
            dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
            return head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    return "unknown (not a git checkout)"


def utc_now() -> str:
    """The time now, ``YYYY-MM-DD HH:MM UTC``."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"


def machine_line() -> str:
    """The machine, the software and the time in one line:
    ``CPU …, N cores (OMP_NUM_THREADS=…); GPU …; torch …; vol25d … at commit …; YYYY-MM-DD HH:MM UTC``."""
    import torch

    import vol25d

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    return (f"CPU {cpu_name()}, {cpu_count()} cores (OMP_NUM_THREADS={threads}); GPU {gpu_name()}; "
            f"torch {torch.__version__}; vol25d {vol25d.__version__} at commit {commit()}; {utc_now()}")

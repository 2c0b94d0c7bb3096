"""In-process A/B of the CPU kernels (vol25d.ops.cpu_kernels) against the reference kernels (vol25d.ops.reference)
through the public vol25d.ops functions, one torch thread by default.

For each operator and size the two backends run interleaved (reference, cpu, reference, cpu, …) and each
keeps its best of ``--repeats`` runs, in wall seconds and in this thread's CPU seconds (``time.thread_time``,
less disturbed by other jobs on a shared machine than wall time). Rows: ``mip`` (64 views, no gradient, as M
runs), ``project``, ``backproject`` and its backward, the explained back-projection forward (64 views, as
inference runs it) and its backward (8 views, as a path-1 step runs it), and ``mip backward``.

Usage (one command): ``python experiments/bench_cpu_kernels.py [--sizes 128 256] [--repeats 3] [--threads 1]
[--out experiments/results/bench_cpu_kernels.md] [--note TEXT]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from vol25d.geometry import default_detector, equal_angles
from vol25d.ops import backproject, backproject_explained, mip, project

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, cpu_count, cpu_name, utc_now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("reference", "cpu")


def cases(size: int):
    """``(name, make)`` pairs; ``make()`` returns the closure to time (its setup runs outside the timing)."""
    shape = (size, size, size)
    detector = default_detector(size, size)
    angles64, angles8 = equal_angles(64), equal_angles(64)[::8].contiguous()

    def volume(requires_grad=False):
        return torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0), requires_grad=requires_grad)

    def views(count, classes=1, requires_grad=False):
        return torch.rand(1, classes, count, size, detector, generator=torch.Generator().manual_seed(1),
                          requires_grad=requires_grad)

    def mip_forward():
        x = volume()
        return lambda: mip(x, angles64, detector)

    def mip_backward():
        x = volume(True)
        out = mip(x, angles64, detector)
        grad = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, x, grad, retain_graph=True)

    def project_forward():
        x = volume()
        return lambda: project(x, angles64, detector)

    def backproject_forward():
        v = views(64)
        return lambda: backproject(v, angles64, (size, size))

    def backproject_backward():
        v = views(64, requires_grad=True)
        out = backproject(v, angles64, (size, size))
        grad = torch.randn_like(out)
        return lambda: torch.autograd.grad(out, v, grad, retain_graph=True)

    def explained(count, backward):
        def make():
            x = volume().clamp(0, 3) / 3
            angles = angles64 if count == 64 else angles8
            image_views = mip(x, angles, detector)
            v = views(count, requires_grad=backward)
            margin = torch.full((1,), 0.1, requires_grad=backward)
            softness = torch.full((1,), 0.3, requires_grad=backward)
            if not backward:
                return lambda: backproject_explained(v, image_views, x, angles, margin, softness)
            out = backproject_explained(v, image_views, x, angles, margin, softness)
            grad = torch.randn_like(out)
            return lambda: torch.autograd.grad(out, (v, margin, softness), grad, retain_graph=True)

        return make

    return [("mip, 64 views", mip_forward), ("project, 64 views", project_forward),
            ("backproject, 64 views", backproject_forward), ("backproject backward, 64 views", backproject_backward),
            ("explained back-projection, 64 views", explained(64, False)),
            ("explained back-projection backward, 8 views", explained(8, True)),
            ("mip backward, 64 views", mip_backward)]


def ab(make, repeats: int) -> dict[str, tuple[float, float]]:
    """Best ``(wall, thread CPU)`` seconds per backend, the backends interleaved run by run."""
    closures = {}
    for name in BACKENDS:
        os.environ["VOL25D_OPS_BACKEND"] = name
        closures[name] = make()
        closures[name]()  # warm-up (and the CPU kernels' plans)
    best = {name: (float("inf"), float("inf")) for name in BACKENDS}
    for _ in range(repeats):
        for name in BACKENDS:
            os.environ["VOL25D_OPS_BACKEND"] = name
            wall, cpu = time.perf_counter(), time.thread_time()
            closures[name]()
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    os.environ.pop("VOL25D_OPS_BACKEND", None)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128], help="cube sides (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per backend, best taken (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-reference-above", type=int, default=None,
                        help="time only the CPU kernels above this side (the reference MIP takes minutes at 256³)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_cpu_kernels.md")
    parser.add_argument("--note", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rows = ["| operator | volume | reference wall | CPU kernels wall | reference CPU s | CPU kernels CPU s "
            "| speed-up (CPU s) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for size in args.sizes:
        for name, make in cases(size):
            print(f"{name} {size}³ …", file=sys.stderr, flush=True)
            if args.skip_reference_above and size > args.skip_reference_above:
                os.environ["VOL25D_OPS_BACKEND"] = "cpu"
                closure = make()
                closure()
                wall, cpu = float("inf"), float("inf")
                for _ in range(args.repeats):
                    w, c = time.perf_counter(), time.thread_time()
                    closure()
                    wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.thread_time() - c)
                os.environ.pop("VOL25D_OPS_BACKEND")
                rows.append(f"| {name} | {size}³ | not run | {wall:.3f} s | not run | {cpu:.3f} s | — |")
                continue
            best = ab(make, args.repeats)
            (rw, rc), (cw, cc) = best["reference"], best["cpu"]
            rows.append(f"| {name} | {size}³ | {rw:.3f} s | {cw:.3f} s | {rc:.3f} s | {cc:.3f} s | {rc / cc:.1f}× |")
            print(rows[-1], file=sys.stderr, flush=True)
    load_end = os.getloadavg()
    now = utc_now()
    command = "python experiments/bench_cpu_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "# CPU kernels against the reference kernels, in-process A/B", "",
        f"Written by `{command.strip()}` on {now}.", "",
        f"- Machine: {cpu_name()}, {cpu_count()} CPU(s); {platform.platform()}; torch {torch.__version__} on "
        f"{args.threads} thread(s); commit {commit()}.",
        f"- Load average (1 min) {load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end; the backends ran "
        "interleaved, so both saw the same load; CPU s (this thread's CPU time) is the steadier figure.",
        *([f"- Note: {args.note}"] if args.note else []), "",
        "Each cell: the best of the runs after a warm-up; float32, batch 1, equally spaced directions, the default "
        "detector. See the script's docstring.", "", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()

"""How many torch CPU threads `vol25d` should use: the time of path-1 training steps (the demo's model when this
was measured: m = 64, p = 24, a U of one residual unit per level) on a 48³ phantom, with 1 thread and with 2,
each in a fresh process, alternating so that a change of load on a shared machine hits both alike.

Prints a table and writes it, with the machine and its load, to ``experiments/results/bench_threads.md``;
``vol25d.device.auto_threads`` quotes it.

Usage: ``python experiments/bench_threads.py [--threads 1 2] [--steps 12] [--rounds 2] [--note TEXT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def worker(threads: int, steps: int, data: Path) -> dict:
    """``steps`` path-1 steps after one warm-up step; per-step wall seconds and process CPU seconds."""
    import torch

    torch.set_num_threads(threads)
    from vol25d.data.augment import augment
    from vol25d.data.dataset import load_dataset
    from vol25d.data.prepare import prepare_cases
    from vol25d.geometry import random_directions
    from vol25d.model import Random25DUNet
    from vol25d.ops import mip
    from vol25d.train import Objective, TrainConfig

    dataset = load_dataset(data)
    cases, _, _ = prepare_cases(dataset, dataset.cases, [])
    directions_m, views_p = 64, 24
    torch.manual_seed(0)
    model = Random25DUNet(1, 1, directions=directions_m, views=views_p, num_res_units=1)
    directions = torch.Generator().manual_seed(0)
    config = TrainConfig(path=1, amp=False, device="cpu")
    objective = Objective(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()

    def step(case):
        image, label = augment(case.image[None], case.label[None].float(), config.augment)
        angles = random_directions(directions_m, views_p, directions)
        output, views = model(image, angles, return_views=True)
        loss = objective(output.float(), label, views.float(), mip(label, angles))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(cases[0])
    wall, cpu = [], []
    for i in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step(cases[i % len(cases)])
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"threads": torch.get_num_threads(), "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each thread count, alternating")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_threads.md")
    parser.add_argument("--note", default="")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.data)))
        return

    from vol25d.data.phantom import write_phantom_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _provenance import cpu_count, machine_line, utc_now

    load_start = os.getloadavg()[0]
    runs: dict[int, list[dict]] = {n: [] for n in args.threads}
    with tempfile.TemporaryDirectory() as folder:
        data = write_phantom_dataset(Path(folder) / "data", n=2, size=48, seed=0)
        for round_ in range(args.rounds):
            for n in args.threads:
                command = [sys.executable, __file__, "--worker", str(n), "--steps", str(args.steps), "--data", str(data)]
                result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
                runs[n].append(result)
                print(f"round {round_ + 1}, {n} thread(s): median step {statistics.median(result['wall']):.3f} s", flush=True)
    load_end = os.getloadavg()[0]

    rows = []
    for n, results in runs.items():
        wall = [w for r in results for w in r["wall"]]
        cpu = [c for r in results for c in r["cpu"]]
        per_run = ", ".join(f"{statistics.median(r['wall']):.3f}" for r in results)
        rows.append(f"| {n} | {statistics.median(wall):.3f} s | {per_run} | {statistics.median(cpu):.3f} s |")
    cpus = cpu_count()
    text = "\n".join([
        "# torch CPU threads for a path-1 training step",
        "",
        f"Written by `python experiments/bench_threads.py --threads {' '.join(map(str, args.threads))} --steps "
        f"{args.steps} --rounds {args.rounds}` on {utc_now()}.",
        "",
        f"- Machine: {machine_line()}; {platform.platform()}.",
        f"- Load average {load_start:.1f} at the start and {load_end:.1f} at the end on {cpus} CPU(s)"
        + (" — other jobs shared the CPU, so times are noisy upper bounds." if load_start > 1.0 else
           " (the end includes this run's own workers)."),
        *([f"- Note: {args.note}"] if args.note else []),
        "- Step: the demo's model when first measured (m = 64, p = 24, U with one residual unit per level), a 48³ "
        "phantom, augmentation on, "
        f"forward + backward + AdamW; {args.steps} steps after one warm-up step, per process; each thread count in "
        f"{args.rounds} fresh processes, alternating.",
        "",
        "| torch threads | median step (wall) | median per run | median CPU time per step |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

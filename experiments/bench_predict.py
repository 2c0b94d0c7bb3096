"""Whole-volume prediction of real-size MRI on this machine: wall time and peak memory of `vol25d predict`.

Two shapes the issue names: about 200×220×180 at 1 mm (a brain), and 512×512×20 at 0.7×0.7×7 mm (an
abdominal stack). Each input is a synthetic phantom of that shape and spacing written as NIfTI; each
prediction runs as its own `vol25d predict` process so its peak RSS is its own.

Usage: ``python experiments/bench_predict.py -m RUN/path2.pt [--out experiments/results/bench_predict.md]``
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from vol25d.data.phantom import make_phantom
from vol25d.io import Volume, write_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import machine_line  # noqa: E402

CASES = [((200, 220, 180), (1.0, 1.0, 1.0)), ((512, 512, 20), (0.7, 0.7, 7.0))]


def _machine() -> str:
    return f"{machine_line()}; Python {platform.python_version()}"


# A fresh wrapper per case: RUSAGE_CHILDREN then holds exactly one `vol25d predict` process.
_WRAPPER = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _run(checkpoint: Path, image: Path, output: Path) -> tuple[float, float]:
    """Seconds and peak RSS (GiB) of one `vol25d predict` process."""
    command = [sys.executable, "-m", "vol25d", "-q", "predict", "-i", str(image), "-o", str(output),
               "-m", str(checkpoint), "--device", "cpu"]
    result = subprocess.run([sys.executable, "-c", _WRAPPER, *command], check=True, capture_output=True, text=True)
    seconds, peak_kib = result.stdout.split()[-2:]
    return float(seconds), int(peak_kib) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", required=True, type=Path, help="checkpoint to predict with")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_predict.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for shape, spacing in CASES:
            image, _, affine = make_phantom(shape, seed=1, spacing=spacing)
            source = write_volume(Volume(image, affine), Path(folder) / f"{'x'.join(map(str, shape))}.nii.gz")
            seconds, peak = _run(args.model, source, Path(folder) / "mask.nii.gz")
            rows.append(f"| {'×'.join(map(str, shape))} | {'×'.join(map(str, spacing))} | {seconds:.1f} | {peak:.2f} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| shape (voxels) | spacing (mm) | wall time (s) | peak RSS (GiB) |", "| --- | --- | --- | --- |", *rows])
    text = (f"# vol25d predict on real-size volumes\n\nMachine: {_machine()}.\nCheckpoint: `{args.model}`.\n"
            f"Each row is one `vol25d predict` process (read, preprocess, all m directions, restore, write).\n\n{table}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

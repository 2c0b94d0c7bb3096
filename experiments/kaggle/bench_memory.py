"""Peak memory of the train notebook's data steps at the competition's size: conversion, then planning.

A synthetic competition folder of the real shape — patients × days × 144 slices of 266×266 or 360×310 16-bit
PNGs (1.5 mm pixels, as most of the real case-days), and a ``train.csv`` with three rows per slice whose masks
are real RLE — is converted with :func:`vol25d.data.gitract.convert_gitract` into a scratch folder, then the
preprocessing is planned from the training case-days exactly as ``vol25d.data.prepare.prepare_cases`` plans it
(a generator of images into :func:`vol25d.data.planning.plan_from_volumes`). Each size runs in a fresh
process, which reports its peak RSS (``ru_maxrss``) after a quarter, half and all of the case-days of each
step, so a peak that grew with the number of case-days would show.

To write the folder quickly each distinct slice is one PNG file, hard-linked into every case-day that uses it
(a case-day of one size reuses the same 144 slices): every slice is still opened and decoded, as on Kaggle.

Usage: ``python experiments/kaggle/bench_memory.py --patients 10 40 85 [--days 3] [--work /tmp/bench]``
(writes experiments/results/kaggle_memory.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SLICES = 144
SIZES = [(266, 266), (360, 310)]  # (W, H) of a PNG, as slice_XXXX_W_H_…
PIXEL_MM = 1.50


def _slice(h: int, w: int, z: int, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 16-bit abdomen-like slice and its three organ masks (they move with ``z``, as organs do)."""
    y, x = np.mgrid[:h, :w]
    body = ((y - h / 2) / (0.42 * h)) ** 2 + ((x - w / 2) / (0.46 * w)) ** 2 <= 1
    t = z / SLICES
    masks = [
        (((y - (0.3 + 0.3 * t) * h) / 22) ** 2 + ((x - 0.3 * w) / 30) ** 2 <= 1) & body,
        (((y - 0.6 * h) / 30) ** 2 + ((x - (0.45 + 0.1 * t) * w) / 40) ** 2 <= 1) & body & (z > 30),
        (((y - 0.35 * h) / 25) ** 2 + ((x - 0.7 * w) / 25) ** 2 <= 1) & body & (z < 60),
    ]
    pixels = np.where(body, 800.0, 0.0) + rng.normal(0, 60, (h, w))
    for level, mask in zip((1400, 1800, 2400), masks):
        pixels[mask] += level - 800
    return np.clip(pixels, 0, 65535).astype(np.uint16), masks


def make_folder(src: Path, patients: int, days: int) -> dict:
    """The synthetic competition folder; returns what it holds."""
    from vol25d.data.gitract import CLASSES, rle_encode

    rng = np.random.default_rng(0)
    pool = src / "pool"
    rles = {}
    for w, h in SIZES:
        for z in range(SLICES):
            pixels, masks = _slice(h, w, z, rng)
            path = pool / f"{w}x{h}" / f"{z:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            rles[(w, h, z)] = [rle_encode(m) for m in masks]
    rows, case_days = [], 0
    for p in range(patients):
        w, h = SIZES[p % len(SIZES)]
        for d in range(days):
            case_day = f"case{p + 1}_day{d}"
            scans = src / "train" / f"case{p + 1}" / case_day / "scans"
            scans.mkdir(parents=True)
            for z in range(SLICES):
                os.link(pool / f"{w}x{h}" / f"{z:04d}.png", scans / f"slice_{z + 1:04d}_{w}_{h}_{PIXEL_MM:.2f}_{PIXEL_MM:.2f}.png")
                rows += [(f"{case_day}_slice_{z + 1:04d}", name, rle) for name, rle in zip(CLASSES, rles[(w, h, z)])]
            case_days += 1
    with (src / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "class", "segmentation"), *rows])
    return {"patients": patients, "case_days": case_days, "slices": case_days * SLICES}


# Run in a fresh process per size: its ru_maxrss is then the peak of these steps alone.
_CHILD = r"""
import json, logging, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from vol25d.data.gitract import convert, reading
from vol25d.data.dataset import load_dataset, split_cases
from vol25d.data.prepare import read_case_images
from vol25d.data.planning import plan_from_volumes
from vol25d.data.preprocess import preprocess_image

src, out = Path(sys.argv[1]), Path(sys.argv[2])
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
marks = {"start": peak()}

days = reading._case_day_dirs(src / "train")
checkpoints = {len(days) // 4: "a quarter", len(days) // 2: "half"}
original = convert.read_gitract_case
seen = []
def counted(case_day_dir, rles):
    seen.append(case_day_dir)
    if len(seen) - 1 in checkpoints:
        marks[f"conversion, {checkpoints[len(seen) - 1]} of the case-days"] = peak()
    return original(case_day_dir, rles)
convert.read_gitract_case = counted  # the name convert_gitract calls
start = time.perf_counter()
convert.convert_gitract(src, out, exclude=())  # every synthetic case-day, case7_day0 too
marks["conversion, all case-days"] = peak()
seconds = {"conversion": time.perf_counter() - start}

dataset = load_dataset(out)
train_cases, val_cases = split_cases(dataset.cases, 0.2, 0)
def stream():
    for i, case in enumerate(train_cases):
        if i in (len(train_cases) // 4, len(train_cases) // 2):
            marks[f"planning, {'a quarter' if i == len(train_cases) // 4 else 'half'} of the case-days"] = peak()
        yield read_case_images(case)
start = time.perf_counter()
config = plan_from_volumes(stream())  # as prepare_cases plans: one image at a time
marks["planning, all case-days"] = peak()
seconds["planning"] = time.perf_counter() - start

sizes = {}  # one preprocessed case-day per slice size: what training then holds per case-day
for case in train_cases:
    image = read_case_images(case)
    key = "x".join(map(str, image[0].shape))
    if key not in sizes:
        tensor, info = preprocess_image(image, config)
        sizes[key] = [list(tensor.shape), tensor.numel() * 4 + 3 * tensor[0].numel()]  # float32 image + uint8 labels
print(json.dumps({"marks": marks, "seconds": seconds, "train_case_days": len(train_cases),
                  "val_case_days": len(val_cases), "target_spacing_mm": list(config.target_spacing_mm),
                  "max_voxels": config.max_voxels, "preprocessed": sizes,
                  "dataset_bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}))
"""


def _machine() -> str:
    """The machine line of the results files (experiments/_provenance.py) and the Python version."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _provenance import machine_line

    return f"{machine_line()}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[10, 40, 85])
    parser.add_argument("--days", type=int, default=3, help="case-days per patient")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vol25d_bench_memory"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results/kaggle_memory.md"))
    args = parser.parse_args()
    rows = []
    for patients in args.patients:
        shutil.rmtree(args.work, ignore_errors=True)
        start = time.perf_counter()
        held = make_folder(args.work / "competition", patients, args.days)
        made = time.perf_counter() - start
        result = subprocess.run([sys.executable, "-c", _CHILD, str(args.work / "competition"), str(args.work / "dataset")],
                                check=True, capture_output=True, text=True)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        shutil.rmtree(args.work, ignore_errors=True)
        rows.append((held, made, report))
        print(json.dumps({**held, **report}), flush=True)

    lines = [
        "# The train notebook's data steps at the competition's size: peak memory",
        "",
        f"Machine: {_machine()}; 2 cores shared with other jobs (timings are contended, memory is not).",
        f"Command: `python experiments/kaggle/bench_memory.py --patients {' '.join(map(str, args.patients))} "
        f"--days {args.days}`.",
        "",
        f"Synthetic competition folders: patients × {args.days} days × {SLICES} slices of 16-bit PNGs, half the "
        f"patients {SIZES[0][0]}×{SIZES[0][1]}, half {SIZES[1][0]}×{SIZES[1][1]}, {PIXEL_MM} mm pixels; train.csv "
        "with 3 RLE rows per slice. Conversion: `convert_gitract` (uint16 NIfTI into a scratch folder); planning: "
        "`plan_from_volumes` over a generator of the training case-days, as `prepare_cases` plans. Peak RSS is "
        "the process's `ru_maxrss` (torch and vol25d imported: the start row).",
        "",
        "| patients | case-days | slices | step | peak RSS so far (GiB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for held, _, report in rows:
        for step, gib in report["marks"].items():
            lines.append(f"| {held['patients']} | {held['case_days']} | {held['slices']} | {step} | {gib:.2f} |")
    lines += ["", "| patients | conversion (s) | planning (s) | converted dataset (GB) | target spacing (mm) | "
              "one preprocessed case-day, image + labels (MB) |", "| --- | --- | --- | --- | --- | --- |"]
    for held, _, report in rows:
        spacing = "×".join(f"{s:.2f}" for s in report["target_spacing_mm"])
        sizes = ", ".join(f"{k}: {tuple(v[0])} {v[1] / 1e6:.1f}" for k, v in report["preprocessed"].items())
        lines.append(f"| {held['patients']} | {report['seconds']['conversion']:.0f} | {report['seconds']['planning']:.0f} "
                     f"| {report['dataset_bytes'] / 1e9:.2f} | {spacing} | {sizes} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

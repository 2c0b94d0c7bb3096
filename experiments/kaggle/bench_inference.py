"""Time of the inference notebook per test case-day at the competition's slice sizes, and the whole test set.

Two synthetic test case-days of the real size — 144 slices of 266×266 and of 360×310 16-bit PNGs, 1.5 mm
pixels — are segmented the way the inference notebook does (``submission_rows_for_test_set`` steps: read the
PNGs, preprocess, all ``m`` directions through the model, back to the PNG grid, threshold, RLE), by a model of
the train notebook's full settings (``ModelConfig(directions=64, views=8)``, the default U-Net, three classes;
untrained weights: the time does not depend on them) with the preprocessing planned from these case-days by
the default planner. Each step is timed on its own, on this CPU, one torch thread.

The T4 estimate: the steps outside the model run on the CPU on Kaggle too and are taken as measured here; the
model step is bounded by the time measured here (a T4 runs convolutions far faster than one CPU thread), and
estimated from its FLOPs (``torch.utils.flop_counter``: the U-Net's convolutions) at 30 % of a T4's 8.1 TFLOP/s
fp32 peak (no bf16 autocast on a T4, as the notebook decides). That count leaves out the projection and
back-projection kernels and launch overheads, so it is a floor; the CPU time of the model is the ceiling. The
hidden test set's size is not public: the estimate assumes as many case-days as the training set (274) and
scales linearly with the count.

Usage: ``python experiments/kaggle/bench_inference.py [--out experiments/results/kaggle_inference.md]
[--max-voxels N]`` (``--max-voxels 0``: the native grid, which ``vol25d train`` plans on a GPU whose memory
holds a training step).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import PIXEL_MM, SIZES, SLICES, _machine, _slice  # noqa: E402  (the same synthetic slices)

from vol25d.data.gitract import CLASSES, read_gitract_test_case, submission_rows  # noqa: E402
from vol25d.data.planning import plan_from_volumes  # noqa: E402
from vol25d.data.preprocess import preprocess_image, restore  # noqa: E402
from vol25d.infer import Predictor, probabilities_to_labels  # noqa: E402
from vol25d.model import ModelConfig, Random25DUNet  # noqa: E402

TEST_CASE_DAYS = 274  # the training set's count, assumed for the hidden test set (its size is not public)
T4_FP32_FLOPS, T4_EFFICIENCY = 8.1e12, 0.30


def _write_case_day(folder: Path, w: int, h: int, rng) -> Path:
    case_day = folder / "test" / f"case{w}" / f"case{w}_day0"
    (case_day / "scans").mkdir(parents=True)
    for z in range(SLICES):
        pixels, _ = _slice(h, w, z, rng)
        Image.fromarray(pixels).save(case_day / "scans" / f"slice_{z + 1:04d}_{w}_{h}_{PIXEL_MM:.2f}_{PIXEL_MM:.2f}.png")
    return case_day


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/kaggle_inference.md"))
    parser.add_argument("--projections", nargs="+", default=["sum", "mip"])
    parser.add_argument("--max-voxels", type=int, default=None,
                        help="the plan's voxel cap (default: the CPU planner's 128³; 0: none, the native grid a GPU "
                        "plans when a training step fits its memory, as on a T4 for these case-days)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(0)
    rows, per_case = [], []
    with tempfile.TemporaryDirectory() as folder:
        days = [_write_case_day(Path(folder), w, h, rng) for w, h in SIZES]
        images = [read_gitract_test_case(day)[0] for day in days]
        config = plan_from_volumes(images, **({} if args.max_voxels is None else {"max_voxels": args.max_voxels}))
        for projection in args.projections:
            model = Random25DUNet(config=ModelConfig(out_channels=len(CLASSES), directions=64, views=8,
                                                     projection=projection)).eval()
            predictor = Predictor(model, config, list(CLASSES), ["MRI"], True, torch.device("cpu"), amp=False)
            for day in days:
                (image, slices), read = _timed(read_gitract_test_case, day)
                (tensor, info), prep = _timed(preprocess_image, [image], predictor.preprocess)
                with torch.no_grad():
                    with FlopCounterMode(display=False) as counter:  # also the warm-up of the timed run
                        predictor.model(tensor[None])
                    output, forward = _timed(predictor.model, tensor[None])
                flops = counter.get_total_flops()
                start = time.perf_counter()
                mask = probabilities_to_labels(restore(output[0], info).array, 0.5, True, 0).astype(bool)
                back = time.perf_counter() - start
                _, encode = _timed(submission_rows, day.name, mask, [s.number for s in slices])
                cpu_side = read + prep + back + encode
                t4_model = flops / (T4_FP32_FLOPS * T4_EFFICIENCY)
                per_case.append((cpu_side, forward, t4_model))
                shape = "×".join(map(str, image.shape))
                rows.append(f"| {projection} | {shape} | {tuple(tensor.shape[1:])} | {read:.2f} | {prep:.2f} | "
                            f"{forward:.2f} | {back:.2f} | {encode:.2f} | {flops / 1e9:.0f} | {t4_model:.2f} |")
                print(rows[-1], flush=True)
    cpu_side = max(c for c, _, _ in per_case)
    bound = max(c + f for c, f, _ in per_case)
    estimate = max(c + t for c, _, t in per_case)  # a floor: projection kernels and launches not counted
    lines = [
        "# The inference notebook's time per test case-day, and the whole test set on a T4",
        "",
        f"Machine: {_machine()}, torch on 1 thread; load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (above 1: other jobs shared the cores, "
        "and the CPU times are upper bounds).",
        f"Command: `python experiments/kaggle/bench_inference.py"
        f"{'' if args.max_voxels is None else f' --max-voxels {args.max_voxels}'}`. Model: the train notebook's full settings "
        f"(m = 64, default U-Net, 3 classes), preprocessing planned by the default planner (voxel cap "
        f"{f'{config.max_voxels:,}' if config.max_voxels else 'none'}, target spacing {'×'.join(f'{s:.2f}' for s in config.target_spacing_mm)} mm).",
        "",
        "| projection | case-day (X×Y×Z) | model input (D, H, W) | read PNGs (s) | preprocess (s) | model, CPU (s) | "
        "restore + threshold (s) | RLE (s) | model GFLOP | model on a T4, floor from its FLOPs (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Whole test set, assumed to be {TEST_CASE_DAYS} case-days (the training set's count; the hidden set's is "
        "not public — scale linearly), each as slow as the slowest case-day above:",
        "",
        f"- CPU-side steps (read, preprocess, restore, RLE), as measured: {cpu_side:.1f} s per case-day → "
        f"{cpu_side * TEST_CASE_DAYS / 60:.0f} min.",
        f"- Upper bound, the model as slow on a T4 as on this CPU thread: {bound:.1f} s per case-day → "
        f"{bound * TEST_CASE_DAYS / 60:.0f} min.",
        f"- Floor, the U-Net's convolutions at {T4_EFFICIENCY:.0%} of a T4's {T4_FP32_FLOPS / 1e12:.1f} TFLOP/s fp32 "
        "and nothing else on the GPU: "
        f"{estimate:.1f} s per case-day → {estimate * TEST_CASE_DAYS / 60:.0f} min.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

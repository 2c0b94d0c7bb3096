"""The reconstructions trained alike on GI-tract-like phantoms (issue 13: "no loss on the GI-tract phantom").

For each seed: small GI-tract-like phantoms (``vol25d.data.gi_phantom``: large bowel, small bowel and
stomach, classes that overlap, 3 mm slices) for training and unseen ones for testing; one model per variant
of ``experiments/diagnose.py`` (same U, F, T settings, epochs, augmentation and loss; only what the variant
names differs), path 1 then path 2; the held-out Dice per class on the native grid at threshold 0.5, and
their mean. Prints the figures and writes ``experiments/results/NAME.md``.

Usage:
    python experiments/gi_reconstruction.py [--seeds 0 1 2] [--variants seed image] [--size 64 64 24]
                                            [--epochs1 6] [--epochs2 2] [--name gi_reconstruction]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import write_results  # noqa: E402
from diagnose import VARIANTS  # noqa: E402

from vol25d.data.augment import AugmentConfig  # noqa: E402
from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.gi_phantom import GI_CLASSES, write_gi_phantom_dataset  # noqa: E402
from vol25d.infer import Predictor  # noqa: E402
from vol25d.io import read_volume  # noqa: E402
from vol25d.metrics import dice  # noqa: E402
from vol25d.model import ModelConfig  # noqa: E402
from vol25d.train import TrainConfig, train  # noqa: E402

log = logging.getLogger("gi_reconstruction")
RESULTS = Path(__file__).resolve().parent / "results"


def held_out_per_class(checkpoint: Path, test: Path) -> np.ndarray:
    """Dice ``(cases, classes)`` of the checkpoint's multi-label output on every case of ``test``."""
    predictor = Predictor.load(checkpoint, "cpu")
    scores = []
    for case in load_dataset(test).cases:
        images = [read_volume(path) for path in case.image_paths]
        labels = predictor.labels(predictor.probabilities(images))  # (X, Y, Z, K) for a multi-label model
        reference = read_volume(case.label_path, dtype=None).array
        scores.append([dice(labels[..., k] > 0, reference[..., k] > 0) for k in range(reference.shape[-1])])
    return np.array(scores)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=["seed", "image"], choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, nargs=3, default=[64, 64, 24], help="(X, Y, Z) voxels of a phantom")
    parser.add_argument("--epochs1", type=int, default=6)
    parser.add_argument("--epochs2", type=int, default=2)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--name", default="gi_reconstruction")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    size = tuple(args.size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vol25d-gi-") as scratch:
        work = Path(scratch)
        for seed in args.seeds:
            data = write_gi_phantom_dataset(work / f"train{seed}", args.train_cases, size, seed)
            test = write_gi_phantom_dataset(work / f"test{seed}", args.test_cases, size, seed + 1000)
            for variant in args.variants:
                model_settings, train_settings, augment_settings = VARIANTS[variant]
                model = ModelConfig(directions=64, views=args.views, num_res_units=1, **model_settings)
                run = work / f"run{seed}_{variant}"
                start = time.perf_counter()
                first = train(data, run, TrainConfig(path=1, epochs=args.epochs1, device="cpu", seed=seed,
                                                     augment=AugmentConfig(**augment_settings), **train_settings),
                              model_config=model, quiet=True)
                second = train(data, run, TrainConfig(path=2, epochs=args.epochs2, device="cpu", seed=seed,
                                                      **train_settings), init=first.checkpoint, quiet=True)
                seconds = time.perf_counter() - start
                scores = held_out_per_class(second.checkpoint, test)
                row = {"seed": seed, "variant": variant, "per_class": scores.mean(axis=0), "mean": float(scores.mean()),
                       "low": float(scores.mean(axis=1).min()), "high": float(scores.mean(axis=1).max()),
                       "train_s": seconds}
                rows.append(row)
                log.info("seed %d %s: mean Dice %.3f, per class %s, %.0f s", seed, variant, row["mean"],
                         np.round(row["per_class"], 3).tolist(), seconds)
    lines = [f"# Seed against explained reconstruction on GI-tract-like phantoms ({args.name})", "",
             f"Training: {args.train_cases} GI-tract-like phantoms (`vol25d.data.gi_phantom`, {size[0]}×{size[1]}×"
             f"{size[2]} voxels, 3 mm slices, three overlapping classes) per seed, path 1 {args.epochs1} epochs + "
             f"path 2 {args.epochs2} epochs, m = 64, p = {args.views}, U with 1 residual unit per level, otherwise "
             "`vol25d train`'s defaults; the variants are `experiments/diagnose.py`'s. Held out: "
             f"{args.test_cases} unseen phantoms per seed; Dice per class on the native grid at threshold 0.5 "
             "(mean over cases), and the mean over classes (min–max over cases). Written by "
             "`experiments/gi_reconstruction.py`.", "",
             "| seed | variant | " + " | ".join(GI_CLASSES) + " | mean | train s |",
             "|---|---|" + "---|" * (len(GI_CLASSES) + 2)]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['variant']} | " + " | ".join(f"{v:.3f}" for v in row["per_class"])
                     + f" | {row['mean']:.3f} ({row['low']:.2f}–{row['high']:.2f}) | {row['train_s']:.0f} |")
    if len(args.seeds) > 1:
        lines += ["", "| variant | seeds | mean Dice, mean ± sd over seeds |", "|---|---|---|"]
        for variant in args.variants:
            means = [row["mean"] for row in rows if row["variant"] == variant]
            lines.append(f"| {variant} | {len(means)} | {np.mean(means):.3f} ± {np.std(means):.3f} |")
    write_results(lines, "; torch threads 1; shared with another agent's jobs (contended)", args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

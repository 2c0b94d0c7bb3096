"""The seed reconstruction beside the explained one (``ModelConfig.reconstruction``), trained alike (issue 13).

For each seed: one training set of vol25d phantoms; the same U, F, T settings, epochs, augmentation, loss and
directions for every reconstruction, only ``reconstruction`` differs; then the held-out Dice (native grid,
threshold 0.5) on unseen phantoms of vol25d's generator and of ``experiments/other_phantoms.py``, after path
1 and after path 2. Prints the figures and writes them to ``experiments/results/NAME.md``.

Usage:
    python experiments/reconstruction.py [--seeds 0 1 2] [--epochs1 20] [--epochs2 5] [--views 24]
                                         [--size 48] [--train-cases 12] [--test-cases 4] [--name reconstruction]
    python experiments/reconstruction.py --collect results/A.md results/B.md ... [--name reconstruction]

``--collect`` reads the per-seed tables of earlier runs (seeds run as separate processes) and writes their
mean ± standard deviation over seeds per reconstruction.
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
from other_phantoms import write_other_dataset  # noqa: E402

from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.phantom import write_phantom_dataset  # noqa: E402
from vol25d.infer import Predictor  # noqa: E402
from vol25d.io import read_volume  # noqa: E402
from vol25d.metrics import dice  # noqa: E402
from vol25d.model import ModelConfig  # noqa: E402
from vol25d.train import TrainConfig, train  # noqa: E402

log = logging.getLogger("reconstruction")
RESULTS = Path(__file__).resolve().parent / "results"


def held_out(checkpoint: Path, test: Path) -> list[float]:
    """Dice per case of the checkpoint's labels on every case of the ``test`` dataset (native grid)."""
    predictor = Predictor.load(checkpoint, "cpu")
    scores = []
    for case in load_dataset(test).cases:
        images = [read_volume(path) for path in case.image_paths]
        labels = predictor.labels(predictor.probabilities(images))
        scores.append(dice(labels > 0, read_volume(case.label_path).array > 0))
    return scores


def collect(paths: list[Path], out: Path, name: str) -> str:
    """Mean ± sd over the seed rows of earlier results files, per reconstruction; writes ``out/name.md``."""
    rows: dict[str, list[list[float]]] = {}
    sources = []
    for path in paths:
        for line in path.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 7 and cells[0].isdigit():
                rows.setdefault(cells[1], []).append([float(cell.split()[0]) for cell in cells[2:7]])
        sources.append(f"[{path.name}]({path.name})")
    lines = [f"# Seed against explained reconstruction, trained: over seeds ({name})", "",
             f"Collected from {', '.join(sources)} (the settings and machine are in each). Held-out Dice, mean ± "
             "standard deviation over seeds of the per-seed means.", "",
             "| reconstruction | seeds | path 1: vol25d | path 1: other | path 2: vol25d | path 2: other | train s |",
             "|---|---|---|---|---|---|---|"]
    for kind, values in rows.items():
        table = np.array(values)
        cells = [f"{table[:, i].mean():.3f} ± {table[:, i].std():.3f}" for i in range(4)]
        lines.append(f"| {kind} | {len(values)} | " + " | ".join(cells) + f" | {table[:, 4].mean():.0f} |")
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs1", type=int, default=20)
    parser.add_argument("--epochs2", type=int, default=5)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--res-units", type=int, default=1)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--reconstructions", default="seed,image")
    parser.add_argument("--name", default="reconstruction")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--collect", type=Path, nargs="+", help="results files of earlier runs to summarise")
    args = parser.parse_args(argv)
    if args.collect:
        print(collect(args.collect, args.out_dir, args.name))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    kinds = [name.strip() for name in args.reconstructions.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vol25d-reconstruction-") as scratch:
        work = Path(scratch)
        for seed in args.seeds:
            data = write_phantom_dataset(work / f"train{seed}", args.train_cases, args.size, seed)
            tests = {"vol25d": write_phantom_dataset(work / f"test{seed}", args.test_cases, args.size, seed + 1000),
                     "other": write_other_dataset(work / f"other{seed}", args.test_cases, args.size, seed + 2000)}
            for kind in kinds:
                # T without the image (as measured, before ModelConfig.head_image): the comparison isolates R.
                model = ModelConfig(directions=64, views=args.views, num_res_units=args.res_units, reconstruction=kind,
                                    head_image=False)
                run = work / f"run{seed}_{kind}"
                start = time.perf_counter()
                first = train(data, run, TrainConfig(path=1, epochs=args.epochs1, device="cpu", seed=seed),
                              model_config=model, quiet=True)
                seconds1 = time.perf_counter() - start
                second = train(data, run, TrainConfig(path=2, epochs=args.epochs2, device="cpu", seed=seed),
                               init=first.checkpoint, quiet=True) if args.epochs2 else None
                seconds = time.perf_counter() - start
                row = {"seed": seed, "reconstruction": kind, "path1_s": seconds1, "train_s": seconds}
                for tag, result in (("path1", first), ("path2", second)):
                    for generator, folder in tests.items():
                        values = held_out(result.checkpoint, folder) if result else [float("nan")]
                        row[f"{tag}/{generator}"] = float(np.mean(values))
                        row[f"{tag}/{generator}/range"] = (float(np.min(values)), float(np.max(values)))
                rows.append(row)
                log.info("seed %d %s: path 1 %.3f / %.3f, path 2 %.3f / %.3f (vol25d / other), %.0f s", seed, kind,
                         row["path1/vol25d"], row["path1/other"], row["path2/vol25d"], row["path2/other"], seconds)
    lines = [f"# Seed against explained reconstruction, trained ({args.name})", "",
             f"Training: {args.train_cases} vol25d phantoms of {args.size}³ per seed, path 1 {args.epochs1} epochs + "
             f"path 2 {args.epochs2} epochs, m = 64, p = {args.views}, U with {args.res_units} residual unit(s) per "
             "level, everything else `vol25d train`'s defaults; only `ModelConfig.reconstruction` differs. Held out: "
             f"{args.test_cases} unseen phantoms of each generator per seed, Dice on the native grid at threshold 0.5 "
             "(mean over cases, min–max in brackets). Written by `experiments/reconstruction.py`.", "",
             "| seed | reconstruction | path 1: vol25d | path 1: other | path 2: vol25d | path 2: other | train s |",
             "|---|---|---|---|---|---|---|"]

    def cell(row, key):
        low, high = row[f"{key}/range"]
        return f"{row[key]:.3f} ({low:.2f}–{high:.2f})"

    for row in rows:
        lines.append(f"| {row['seed']} | {row['reconstruction']} | {cell(row, 'path1/vol25d')} | "
                     f"{cell(row, 'path1/other')} | {cell(row, 'path2/vol25d')} | {cell(row, 'path2/other')} | "
                     f"{row['train_s']:.0f} |")
    if len(args.seeds) > 1:
        lines += ["", "| reconstruction | path 2: vol25d, mean ± sd over seeds | path 2: other |", "|---|---|---|"]
        for kind in kinds:
            mine = [row for row in rows if row["reconstruction"] == kind]
            parts = [f"{np.mean([r[k] for r in mine]):.3f} ± {np.std([r[k] for r in mine]):.3f}"
                     for k in ("path2/vol25d", "path2/other")]
            lines.append(f"| {kind} | {parts[0]} | {parts[1]} |")
    write_results(lines, "; torch threads 1", args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

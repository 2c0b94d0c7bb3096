"""`vol25d train`'s CPU defaults as a user runs them: time and held-out Dice (issue 13).

For each seed and each training generator, the commands of the README, each with nothing but its defaults
(``--seed`` and ``--device cpu`` aside): ``vol25d train --path 1``, ``vol25d train --path 2 --init
RUN/path1.pt``, then ``vol25d predict`` and ``vol25d evaluate`` on held-out phantoms of every generator (new
cases: other data seeds). Training data: 12 phantoms of 48³ from ``vol25d make-phantoms`` (its default
layout, ``mixed``), ``experiments/other_phantoms.py`` or ``experiments/tube_phantoms.py`` (independent
generators); held out: 4 of each generator of ``--test-on`` at each of ``--test-sizes`` (48³ and 96³: the
model predicts on each image's own grid).
Each command runs in its own process, as a user's would; the seconds are the wall time of the two ``train``
commands.

Prints the figures and writes ``experiments/results/NAME.md`` (per seed and mean ± sd over seeds).

Usage:
    python experiments/cpu_defaults.py [--seeds 0 1 2] [--train-on vol25d other tube] [--test-on ...]
                                       [--test-sizes 48 96] [--keep DIR] [--name cpu_defaults]
    python experiments/cpu_defaults.py --collect results/A.md results/B.md --name cpu_defaults
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import write_results  # noqa: E402
from diagnose import TEST_SEED, TRAIN_SEED  # noqa: E402  the data seeds of diagnose.py's sets

from vol25d import metrics  # noqa: E402
from vol25d.checkpoint import Checkpoint  # noqa: E402
from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.prepare import prepare_cases  # noqa: E402
from vol25d.geometry import default_detector  # noqa: E402
from vol25d.infer import Predictor  # noqa: E402
from vol25d.ops import mip  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GENERATORS = ("vol25d", "other", "tube")
SCRIPTS = {"other": "other_phantoms.py", "tube": "tube_phantoms.py"}  # the generators that are scripts
HEADER = ["| seed | trained on | tested on | test size | Dice (mean over cases) | worst case | path 1 epochs "
          "| path 2 epochs | train s |", "|---|---|---|---|---|---|---|---|---|"]


def format_row(row: tuple) -> str:
    """One per-seed row of the results table (:data:`HEADER`), as :func:`read_rows` reads it back."""
    seed, source, target, size, dice, worst, epochs1, epochs2, seconds = row
    return (f"| {seed} | {source} | {target} | {size}³ | {dice:.3f} | {worst:.3f} | {epochs1} | {epochs2} | "
            f"{seconds:.0f} |")


def run(*args) -> str:
    """Run ``args`` (``vol25d`` or a script) as its own process; its stdout, or the error it ended with."""
    command = [sys.executable, *(["-m", "vol25d"] if not str(args[0]).endswith(".py") else []), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result.stdout


def write_data(generator: str, out: Path, n: int, size: int, seed: int) -> Path:
    if generator == "vol25d":
        run("-q", "make-phantoms", out, "--n", n, "--size", size, "--seed", seed)
    else:
        run(HERE / SCRIPTS[generator], out, "--n", n, "--size", size, "--seed", seed)
    return out


def case_dice(csv_path: Path) -> list[float]:
    """Per-case Dice from ``vol25d evaluate --csv``."""
    with csv_path.open(newline="") as stream:
        return [float(row["dice"]) for row in csv.DictReader(stream)]


def train_kept(seed: int, source: str, work: Path, args) -> tuple[Path, int, int, float]:
    """Train path 1 and path 2 with the defaults (or reuse a kept run that has both): the run folder, its
    epochs of each path and the wall seconds of the two train commands (``train_seconds.txt`` in the run)."""
    run_dir = work / f"run_{source}{seed}"
    timing = run_dir / "train_seconds.txt"
    if not timing.exists():
        data = write_data(source, work / f"train_{source}{seed}", args.train_cases, args.size,
                          seed + TRAIN_SEED[source])
        start = time.perf_counter()
        run("-q", "train", "--path", 1, "--data", data, "--out", run_dir, "--seed", seed, "--device", "cpu")
        run("-q", "train", "--path", 2, "--data", data, "--out", run_dir, "--seed", seed, "--device", "cpu",
            "--init", run_dir / "path1.pt")
        timing.write_text(f"{time.perf_counter() - start:.1f}\n")
    record = yaml.safe_load((run_dir / "config.yaml").read_text())
    return run_dir, record["path1"]["train"]["epochs"], record["path2"]["train"]["epochs"], float(timing.read_text())


@torch.no_grad()
def view_share(checkpoint: Path, test: Path) -> tuple[float, float]:
    """U's share of the error: the trained model's mean Dice over ``test``'s cases (preprocessed grid, every
    class, threshold 0.5) from U's views and from the label's own MIPs in their place (perfect views at the same
    ``m`` directions, the same trained F, R and T). What perfect views leave is R's and T's share."""
    predictor = Predictor.load(checkpoint, "cpu")
    model = predictor.model.eval()
    data = load_dataset(test)
    prepared, _, _ = prepare_cases(data, data.cases, [], config=predictor.preprocess)
    scores = {"U": [], "label": []}
    for case in prepared:
        image, label = case.image[None].float(), case.label.bool()
        probabilities, image_views = model.all_view_probabilities(image)
        perfect = mip(label[None].float(), model.angles, default_detector(*image.shape[-2:]))
        for name, views in (("U", probabilities), ("label", perfect)):
            found = model.segment_from_views(views, image, image_views)[0] >= 0.5
            scores[name] += [metrics.dice(found[k].numpy(), label[k].numpy()) for k in range(label.shape[0])]
    return float(np.mean(scores["U"])), float(np.mean(scores["label"]))


def validation_curves(work: Path, runs: list[tuple[int, str]]) -> list[str]:
    """Each run's validation Dice per epoch of both paths (its ``pathN_metrics.csv``): whether more epochs
    would have helped."""
    lines = ["| seed | trained on | path 1: validation Dice per epoch | path 2: per epoch |", "|---|---|---|---|"]
    for seed, source in runs:
        curves = []
        for path in (1, 2):
            with (work / f"run_{source}{seed}" / f"path{path}_metrics.csv").open(newline="") as stream:
                curves.append(" ".join(f"{float(row['val_dice']):.3f}" for row in csv.DictReader(stream)))
        lines.append(f"| {seed} | {source} | {curves[0]} | {curves[1]} |")
    return lines


def held_out_dice(checkpoint: Path, test: Path, pred: Path, cases: int) -> list[float]:
    """``vol25d predict`` with ``checkpoint`` on ``test``'s images into ``pred``, then ``vol25d evaluate``: the
    Dice of each case."""
    run("-q", "predict", "-i", test / "imagesTr", "-o", pred, "-m", checkpoint, "--device", "cpu")
    run("-q", "evaluate", "--pred", pred, "--ref", test / "labelsTr", "--csv", pred / "scores.csv")
    dice = case_dice(pred / "scores.csv")
    if len(dice) != cases:
        raise SystemExit(f"evaluate scored {len(dice)} cases of {test}, expected {cases}")
    return dice


def bootstrap_interval(differences: list[float], draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval of the mean of ``differences`` (resampled with replacement)."""
    values = np.asarray(differences, dtype=float)
    means = np.random.default_rng(seed).choice(values, size=(draws, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


PATHS_HEADER = ["| seed | trained on | tested on | test size | Dice after path 1 | after path 2 | path 2 − path 1 "
                "| path 2's best epoch |", "|---|---|---|---|---|---|---|---|"]


def paths_tables(pairs: list[tuple]) -> list[str]:
    """Held-out Dice after path 1 (``path1.pt``) and after path 2 (``path2.pt``) of the same runs, per seed and
    as mean ± sd (ddof 1) with the paired difference's 95 % bootstrap interval over seeds. ``pairs``: ``(seed,
    source, target, size, dice path 1, dice path 2, path 2's best epoch)``; epoch 0 means path 2 kept its
    starting model."""
    lines = ["## After path 1 and after path 2, held out", "",
             "The same runs' `path1.pt` and `path2.pt` on the held-out phantoms (mean Dice over the cases). Path 2 "
             "keeps its starting model (best epoch 0) unless an epoch beats it on validation.", "", *PATHS_HEADER,
             *(f"| {seed} | {source} | {target} | {size}³ | {one:.3f} | {two:.3f} | {two - one:+.3f} | {epoch} |"
               for seed, source, target, size, one, two, epoch in pairs), "",
             "| trained on | tested on | test size | seeds | after path 1 | after path 2 | path 2 − path 1 (95 % "
             "bootstrap interval) | path 2 kept path 1's model |", "|---|---|---|---|---|---|---|---|"]
    for key in sorted({row[1:4] for row in pairs}, key=lambda key: (GENERATORS.index(key[0]), key[2], key[1])):
        mine = [row for row in pairs if row[1:4] == key]
        one, two = [row[4] for row in mine], [row[5] for row in mine]
        difference = [b - a for a, b in zip(one, two)]
        low, high = bootstrap_interval(difference)
        spread = (lambda v: f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}") if len(mine) > 1 else \
            (lambda v: f"{np.mean(v):.3f}")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]}³ | {len(mine)} | {spread(one)} | {spread(two)} | "
                     f"{np.mean(difference):+.3f} ({low:+.3f}, {high:+.3f}) | "
                     f"{sum(row[6] == 0 for row in mine)} of {len(mine)} |")
    return lines


def one_seed(seed: int, source: str, work: Path, args) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """The results rows (:data:`HEADER`) of one trained run, its :func:`view_share` rows on its own generator's
    held-out phantoms (``(seed, source, size, Dice from U's views, from the label's views)``), and with
    ``--path1-too`` its :func:`paths_tables` rows."""
    run_dir, epochs1, epochs2, seconds = train_kept(seed, source, work, args)
    rows, shares, pairs = [], [], []
    for size in args.test_sizes:
        for target in args.test_on:
            test = work / f"test_{target}{seed}_{size}"
            if not test.exists():
                write_data(target, test, args.test_cases, size, seed + TEST_SEED[target])
            pred = work / f"pred_{source}{seed}_{target}_{size}"
            dice = held_out_dice(run_dir / "path2.pt", test, pred, args.test_cases)
            if args.path1_too:
                first = held_out_dice(run_dir / "path1.pt", test, work / f"pred1_{source}{seed}_{target}_{size}",
                                      args.test_cases)
                best_epoch = Checkpoint.load(run_dir / "path2.pt").best_epoch
                pairs.append((seed, source, target, size, float(np.mean(first)), float(np.mean(dice)), best_epoch))
            rows.append((seed, source, target, size, float(np.mean(dice)), min(dice), epochs1, epochs2, seconds))
            print(f"seed {seed}: trained on {source}, tested on {target} {size}³: Dice {np.mean(dice):.3f} "
                  f"(worst {min(dice):.3f}); train {seconds:.0f} s", flush=True)
            if target == source:
                shares.append((seed, source, size, *view_share(run_dir / "path2.pt", test)))
                print(f"  preprocessed grid: Dice {shares[-1][3]:.3f} from U's views, {shares[-1][4]:.3f} from the "
                      "label's own", flush=True)
    return rows, shares, pairs


def share_tables(shares: list[tuple], per_seed: bool = True) -> list[str]:
    """:func:`view_share`'s rows per seed (unless ``per_seed`` is off) and their mean ± sd over seeds."""
    lines = ["## U's share of the error", "",
             "The trained model (path 2) on its own generator's held-out phantoms, on the preprocessed grid at "
             "threshold 0.5: from U's views, and from the label's own MIPs in their place (perfect views, the same "
             "trained F, R and T). The gap is U's share of the error; what perfect views leave is R's and T's.", ""]
    if per_seed:
        lines += ["| seed | trained and tested on | test size | Dice from U's views | from the label's views |",
                  "|---|---|---|---|---|",
                  *(f"| {seed} | {source} | {size}³ | {u:.3f} | {perfect:.3f} |"
                    for seed, source, size, u, perfect in shares), ""]
    lines += ["| trained and tested on | test size | seeds | from U's views | from the label's views |",
              "|---|---|---|---|---|"]
    for source in GENERATORS:
        for size in sorted({row[2] for row in shares}):
            mine = [row for row in shares if row[1:3] == (source, size)]
            if mine:
                u, perfect = [row[3] for row in mine], [row[4] for row in mine]
                lines.append(f"| {source} | {size}³ | {len(mine)} | {np.mean(u):.3f} ± {np.std(u):.3f} | "
                             f"{np.mean(perfect):.3f} ± {np.std(perfect):.3f} |")
    return lines


def summary(rows: list[tuple]) -> list[str]:
    lines = ["| trained on | tested on | test size | seeds | Dice (mean ± sd over seeds) | worst case | train s (mean, max) |",
             "|---|---|---|---|---|---|---|"]
    for source in GENERATORS:
        for size in sorted({row[3] for row in rows}):
            for target in GENERATORS:
                mine = [row for row in rows if row[1:4] == (source, target, size)]
                if mine:
                    dice = [row[4] for row in mine]
                    seconds = [row[8] for row in mine]
                    lines.append(f"| {source} | {target} | {size}³ | {len(mine)} | {np.mean(dice):.3f} ± "
                                 f"{np.std(dice):.3f} | {min(row[5] for row in mine):.3f} | {np.mean(seconds):.0f}, "
                                 f"{max(seconds):.0f} |")
    return lines


def _table_rows(path: Path, columns: int) -> list[list[str]]:
    """The cells of every Markdown table row in ``path`` with ``columns`` cells whose first is a seed."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == columns and cells[0].isdigit():
            rows.append(cells)
    return rows


def read_rows(path: Path) -> list[tuple]:
    return [(int(c[0]), c[1], c[2], int(c[3].rstrip("³")), float(c[4]), float(c[5]), int(c[6]), int(c[7]), float(c[8]))
            for c in _table_rows(path, 9)]


def read_shares(path: Path) -> list[tuple]:
    """The per-seed rows of :func:`share_tables` in a results file: ``(seed, source, size, from U, from the
    label)``."""
    return [(int(c[0]), c[1], int(c[2].rstrip("³")), float(c[3]), float(c[4]))
            for c in _table_rows(path, 5) if c[2].endswith("³")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-on", nargs="+", default=["vol25d", "other"], choices=GENERATORS)
    parser.add_argument("--test-on", nargs="+", default=list(GENERATORS), choices=GENERATORS,
                        help="generators of the held-out phantoms (default: all)")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--test-sizes", type=int, nargs="+", default=[48, 96],
                        help="held-out phantoms of these sizes (new cases each; the model trained at --size)")
    parser.add_argument("--name", default="cpu_defaults")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="keep data, runs and predictions here; a kept run that finished "
                        "both paths is scored again, not trained again (its recorded seconds are reported)")
    parser.add_argument("--collect", type=Path, nargs="+", help="results files of earlier runs to put together")
    parser.add_argument("--path1-too", action="store_true",
                        help="also score each run's path1.pt on the held-out phantoms: path 2 against path 1")
    args = parser.parse_args(argv)
    if args.collect:
        rows = [row for path in args.collect for row in read_rows(path)]
        sources = ", ".join(f"[{path.name}]({path.name})" for path in args.collect)
        lines = [f"# `vol25d train`'s CPU defaults over seeds ({args.name})", "",
                 f"Collected from {sources} (settings and machine in each).", "", *summary(rows)]
        shares = [row for path in args.collect for row in read_shares(path)]
        if shares:
            lines += ["", *share_tables(shares, per_seed=False)]
        (args.out_dir / f"{args.name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    rows, shares, pairs = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        for seed in args.seeds:
            for source in args.train_on:
                mine, share, pair = one_seed(seed, source, work, args)
                rows, shares, pairs = rows + mine, shares + share, pairs + pair
        curves = validation_curves(work, [(seed, source) for seed in args.seeds for source in args.train_on])
    lines = [f"# `vol25d train`'s CPU defaults, trained and held out ({args.name})", "",
             f"Per seed: {args.train_cases} training phantoms of {args.size}³ of the named generator, `vol25d train "
             "--path 1` then `--path 2` with their defaults (`--seed S --device cpu` only; 20 % of the cases "
             f"validate), then `vol25d predict` and `vol25d evaluate` on {args.test_cases} held-out phantoms of each "
             "generator and test size (Dice on the native grid at threshold 0.5). `train s`: wall time of both "
             "train commands.",
             "", *HEADER]
    lines += [*map(format_row, rows), "", *summary(rows), "", *curves]
    if shares:
        lines += ["", *share_tables(shares)]
    if pairs:
        lines += ["", *paths_tables(pairs)]
    write_results(lines, "; torch threads: `vol25d --threads auto`", args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

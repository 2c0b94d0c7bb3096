"""What path 2 changed in trained models (issue 33): F's taps, the explained reconstruction's margin and
softness, T's steepness γ, its threshold and its image correction, and the checkpoint path 2 kept.

Usage:
    python experiments/path2_changes.py RUN [RUN ...] --out results/path2_changes.md [--note TEXT]

Each ``RUN`` is a run folder of ``vol25d train`` (or one that ``experiments/benchmark.py --keep-runs`` kept)
holding ``path1.pt`` and ``path2.pt``; ``path2_metrics.csv`` beside them gives path 2's validation curve.
Nothing is trained or predicted: the script reads the two checkpoints of each run and writes one Markdown row
per run, then a row of means over the runs.

- *kept*: path 2's checkpoint epoch; ``0`` means no path-2 epoch beat the path-1 model on validation, so path 2
  kept it unchanged.
- *validation Dice*: path 1's best (the model path 2 starts from; path 2 validates it again with all ``m``
  views, which is the same number) → path 2's best.
- *F*: ``‖k₂ − k₁‖ / ‖k₁‖`` of the effective taps (:meth:`vol25d.model.Filtration.effective_kernel`), and
  the centre tap before → after.
- *T's threshold*: the reconstruction value ``r`` where T's output is 0.5 without its image correction,
  ``−β / γ``; *γ*: T's steepness. *correction*: the Frobenius norm of T's 3×3×3 image correction.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from vol25d.checkpoint import Checkpoint
from vol25d.model import ModelConfig, Random25DUNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import machine_line  # noqa: E402

COLUMNS = ("run", "kept (path-2 epoch)", "validation Dice", "F change", "F centre tap", "margin", "softness",
           "T's threshold", "γ", "correction")


def _model(path: Path) -> tuple[Random25DUNet, Checkpoint]:
    checkpoint = Checkpoint.load(path)
    model = Random25DUNet.from_config(ModelConfig(**checkpoint.model_config))
    model.load_state_dict(checkpoint.state_dict)
    return model, checkpoint


def _pair(before: torch.Tensor, after: torch.Tensor, digits: int = 3) -> str:
    """``a → b`` of per-class values (classes joined by ``/``)."""
    def values(t):
        return "/".join(f"{v:.{digits}g}" for v in t.flatten().tolist())
    return f"{values(before)} → {values(after)}"


@torch.no_grad()
def changes(run: Path) -> dict:
    """What path 2 changed in ``run`` (``path1.pt`` → ``path2.pt``): the table's cells, and the numbers behind
    them under ``"numbers"``."""
    first, one = _model(run / "path1.pt")
    second, two = _model(run / "path2.pt")
    k1, k2 = first.filtration.effective_kernel(), second.filtration.effective_kernel()
    centre = k1.shape[1] // 2
    f_change = float((k2 - k1).norm() / k1.norm())
    numbers = {"kept": int(two.best_epoch or 0), "val1": float(one.best_dice), "val2": float(two.best_dice),
               "f_change": f_change}
    row = {"run": run.name, "kept (path-2 epoch)": str(numbers["kept"]),
           "validation Dice": f"{numbers['val1']:.3f} → {numbers['val2']:.3f}",
           "F change": f"{f_change:.3f}", "F centre tap": _pair(k1[:, centre], k2[:, centre])}
    if first.explanation is not None:
        row["margin"] = _pair(first.explanation.margin, second.explanation.margin)
        row["softness"] = _pair(first.explanation.log_softness.exp(), second.explanation.log_softness.exp())
    head1, head2 = first.head, second.head
    if head1.norm is None:
        row["T's threshold"] = _pair(-head1.shift / head1.scale, -head2.shift / head2.scale)
        row["γ"] = _pair(head1.scale, head2.scale)
        numbers["threshold"] = float((-head2.shift / head2.scale).mean() - (-head1.shift / head1.scale).mean())
    if head1.context is not None:
        row["correction"] = f"{float(head1.context.weight.norm()):.3g} → {float(head2.context.weight.norm()):.3g}"
    metrics = run / "path2_metrics.csv"
    if metrics.exists():
        with metrics.open() as handle:
            numbers["curve"] = [float(r["val_dice"]) for r in csv.DictReader(handle)]
    row["numbers"] = numbers
    return row


def report(runs: list[Path], note: str = "") -> str:
    rows = [changes(run) for run in runs]
    lines = ["# What path 2 changed (issue 33)", "",
             f"Written by `python experiments/path2_changes.py` over {len(rows)} run folder(s); "
             "the script's docstring defines each column. " + note, "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(row.get(column, "n/a") for column in COLUMNS) + " |")
    numbers = [row["numbers"] for row in rows]
    kept = sum(n["kept"] == 0 for n in numbers)
    gain = np.array([n["val2"] - n["val1"] for n in numbers])
    lines += ["", f"Path 2 kept the path-1 model in {kept} of {len(rows)} runs; its validation gain was "
              f"{gain.mean():+.3f} on average (range {gain.min():+.3f} to {gain.max():+.3f}); F's taps moved by "
              f"{np.mean([n['f_change'] for n in numbers]):.3f} of their norm on average."]
    shifts = [n["threshold"] for n in numbers if "threshold" in n]
    if shifts:
        lines.append(f"T's threshold moved by {np.mean(shifts):+.3f} on average (range {min(shifts):+.3f} to "
                     f"{max(shifts):+.3f}).")
    curves = [(row["run"], n["curve"]) for row, n in zip(rows, numbers) if n.get("curve")]
    if curves:
        lines += ["", "Path 2's validation Dice per epoch:", ""]
        lines += [f"- {name}: " + " ".join(f"{v:.3f}" for v in curve) for name, curve in curves]
    lines += ["", "## Machine", "", machine_line()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding path1.pt and path2.pt")
    parser.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    parser.add_argument("--note", default="", help="a sentence to add: where the runs came from")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not (run / "path1.pt").exists() or not (run / "path2.pt").exists()]
    if missing:
        parser.error(f"{', '.join(missing)}: no path1.pt and path2.pt there; pass run folders of both paths")
    text = report(args.runs, args.note)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(text)
    partial.replace(args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

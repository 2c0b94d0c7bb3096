"""``RUN/progress.png``: the training curves of a run folder (loss, validation Dice, learning rate against
epochs), both paths on one epoch axis, drawn from its ``pathN_metrics.csv`` files after every epoch."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vol25d.checkpoint import RunFolder
from vol25d.files import atomic_path

__all__ = ["Curve", "read_curves", "write_progress_plot"]

_PANELS = (("train_loss", "training loss"), ("val_dice", "validation Dice"), ("lr", "learning rate"))


@dataclass
class Curve:
    """One path's rows of its metrics CSV.

    Attributes:
        path: 1 or 2.
        epochs: the path's own epoch numbers.
        x: the same epochs on the run's shared axis: path 2's follow the last of path 1 in the same folder.
        train_loss, val_dice, lr: one value per epoch (``nan`` validation Dice without validation cases).
    """

    path: int
    epochs: list[int] = field(default_factory=list)
    x: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_dice: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def read_curves(run: RunFolder | str | os.PathLike) -> list[Curve]:
    """The curves of every path whose metrics CSV the run folder holds, path 1 first; path 2's epochs
    continue on the shared axis after path 1's last (from 1 where the folder has no path 1)."""
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    curves, offset = [], 0
    for path in (1, 2):
        file = run.metrics(path)
        if not file.is_file():
            continue
        curve = Curve(path)
        with file.open(newline="") as handle:
            for row in csv.DictReader(handle):
                curve.epochs.append(int(row["epoch"]))
                curve.x.append(offset + curve.epochs[-1])
                for name, _ in _PANELS:
                    getattr(curve, name).append(float(row[name]))
        if curve.epochs:
            curves.append(curve)
            offset = max(curve.x)
    return curves


def write_progress_plot(run: RunFolder | str | os.PathLike) -> Path | None:
    """Draw :func:`read_curves` of ``run`` into ``RUN/progress.png`` (atomically): three panels, training
    loss, validation Dice and learning rate against the shared epoch axis, one colour per path and a dashed
    line where path 2 starts. ``None`` (nothing written) while the folder has no epoch yet.

    Uses matplotlib's object interface (no pyplot), so a notebook's own plotting backend is left as it is.
    """
    run = run if isinstance(run, RunFolder) else RunFolder(run)
    curves = read_curves(run)
    if not curves:
        return None
    from matplotlib.figure import Figure  # slow to import; only once a run has an epoch
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(13, 3.6))
    axes = figure.subplots(1, len(_PANELS))
    for ax, (name, title) in zip(axes, _PANELS):
        for curve in curves:
            values = getattr(curve, name)
            ax.plot(curve.x, values, marker="o", markersize=3, color=f"C{curve.path - 1}", label=f"path {curve.path}")
            if all(math.isnan(v) for v in values):
                ax.text(0.5, 0.5, f"path {curve.path}: no validation cases", transform=ax.transAxes, ha="center")
        if len(curves) == 2:
            ax.axvline(curves[0].x[-1] + 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch" + (" (path 2 after path 1)" if len(curves) == 2 else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"{run.root.resolve().name}: " + "; ".join(
        f"path {c.path}, {len(c.epochs)} epoch{'' if len(c.epochs) == 1 else 's'}" for c in curves))
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.85, wspace=0.22)  # not "constrained": slower
    with atomic_path(run.progress_plot) as temporary:
        figure.savefig(temporary, dpi=80)
    return run.progress_plot

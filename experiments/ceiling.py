"""Perfect-view ceiling of each reconstruction R (issue 13): the label's own MIPs stand in for U's output.

With views about one axis the seed reconstruction (``R ∘ F`` with the identity F: the mean of the views'
back-projected probabilities) can rebuild at best the visual hull of the object. This script measures, with
perfect views (``mip(label)`` at the model's ``m`` directions, a silhouette in ``[0, 1]``), the best Dice each
candidate reconstruction reaches on preprocessed phantoms (vol25d's own generator,
``experiments/other_phantoms.py`` and ``experiments/tube_phantoms.py``), with the best threshold per case, so
it tells R's share of the error from U's. Candidates (``x``: the normalised image at the voxel; ``P̂_k``,
``V̂_k``: view ``k`` of the label's and of the image's MIP, linearly interpolated at the voxel's detector
position):

- ``seed``: ``mean_k P̂_k``.
- ``x alone``: the voxel's own intensity, no views at all (a plain threshold of the image: what the
  candidates below must beat to show that the views still matter).
- ``seed AND x``: the seed's hull at a shared level ``t`` intersected with an intensity threshold (the best
  of both per case), the issue's reference point.
- ``seed+x``: the seed's mean and the voxel's own intensity side by side in T (``r + b·x``, the best ``b``
  of a grid shared by all cases): T taking the image as a second input, per-voxel linear.
- ``gauss``: ``mean_k P̂_k · exp(-(V̂_k - x)² / (2 s²))`` — a view's "object on this ray" goes to the voxels
  that explain the ray's maximum (the best softness ``s`` of a grid).
- ``sigmoid``: ``mean_k P̂_k · σ((x - V̂_k + margin) / s)`` (the best ``(margin, s)``).
- ``gauss-norm``: ``Σ_k P̂_k w_k / (Σ_k w_k + ε)`` with the Gaussian ``w_k``.

The parameters shared by all cases (``s``, ``margin``, ``b``) are picked by the mean over cases of the
per-case best Dice: they are what training would learn once for all. No training, no U.

Usage:
    python experiments/ceiling.py [--sizes 48 96] [--generators vol25d other tube] [--cases 8] [--directions 64]
                                  [--name ceiling]
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

from benchmark import machine  # noqa: E402
from other_phantoms import write_other_dataset  # noqa: E402
from tube_phantoms import write_tube_dataset  # noqa: E402

from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.gi_phantom import write_gi_phantom_dataset  # noqa: E402
from vol25d.data.phantom import write_phantom_dataset  # noqa: E402
from vol25d.data.prepare import prepare_cases  # noqa: E402
from vol25d.geometry import default_detector, equal_angles  # noqa: E402
from vol25d.ops import backproject, mip  # noqa: E402

log = logging.getLogger("ceiling")
RESULTS = Path(__file__).resolve().parent / "results"
SOFTNESS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.7)
MARGINS = (0.0, 0.1, 0.2, 0.3, 0.45)
HULL_LEVELS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
IMAGE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def best_dice(score: torch.Tensor, label: torch.Tensor) -> float:
    """The best Dice over every threshold of ``score`` (any shape) against the boolean ``label`` (exact: one
    sort, the Dice of each cut between distinct values)."""
    score = score.flatten().double()
    label = label.flatten().bool()
    positives = int(label.sum())
    if positives == 0:
        return float("nan")
    # Sort once; Dice at every cut from the cumulative count of positives above it.
    order = torch.argsort(score, descending=True)
    hits = torch.cumsum(label[order].double(), 0)
    predicted = torch.arange(1, score.numel() + 1, dtype=torch.float64)
    sorted_score = score[order]
    # Only cut between distinct values (ties go together).
    last_of_value = torch.ones_like(sorted_score, dtype=torch.bool)
    last_of_value[:-1] = sorted_score[1:] != sorted_score[:-1]
    dice = 2 * hits / (predicted + positives)
    return float(dice[last_of_value].max())


def candidates(image: torch.Tensor, label: torch.Tensor, angles: torch.Tensor) -> dict[str, dict]:
    """Best Dice per candidate and parameter for one preprocessed case: ``image`` ``(1, D, H, W)``, ``label``
    ``(K, D, H, W)`` (the mean over classes of each class's best Dice). Returns ``{candidate: {parameter: dice}}``."""
    x = image[None].float()  # (1, 1, D, H, W)
    y = label[None].float()  # (1, K, D, H, W)
    plane = tuple(x.shape[-2:])
    detector = default_detector(*plane)
    p_views = mip(y, angles, detector)  # perfect U: the label's own MIPs, (1, K, m, D, S)
    v_views = mip(x, angles, detector)  # the image's MIP: U's own input
    m = angles.numel()
    seed = torch.zeros_like(y)
    gauss = {s: torch.zeros_like(y) for s in SOFTNESS}
    gauss_w = {s: torch.zeros_like(x) for s in SOFTNESS}
    sig = {(g, s): torch.zeros_like(y) for g in MARGINS for s in SOFTNESS}
    for k in range(m):
        one = angles[k : k + 1]
        p_hat = backproject(p_views[:, :, k : k + 1], one, plane)
        v_hat = backproject(v_views[:, :, k : k + 1], one, plane)
        gap = v_hat - x
        seed += p_hat
        for s in SOFTNESS:
            w = torch.exp(-gap.square() / (2 * s * s))
            gauss[s] += p_hat * w
            gauss_w[s] += w
            for g in MARGINS:
                sig[(g, s)] += p_hat * torch.sigmoid((g - gap) / s)
    seed /= m
    truth = label > 0

    def score(volume: torch.Tensor) -> float:
        volume = volume.expand_as(y)[0]
        return float(np.nanmean([best_dice(volume[c], truth[c]) for c in range(truth.shape[0])]))

    out = {"seed": {"-": score(seed)}}
    out["x alone"] = {"-": score(x)}
    out["seed AND x"] = {f"t={t:g}": score(torch.where(seed >= t, x, torch.full_like(seed, -1.0))) for t in HULL_LEVELS}
    out["seed+x"] = {f"b={b:g}": score(seed + b * x) for b in IMAGE_WEIGHTS}
    out["gauss"] = {f"s={s:g}": score(gauss[s]) for s in SOFTNESS}
    out["gauss+x"] = {f"s={s:g},b={b:g}": score(gauss[s] / m + b * x) for s in SOFTNESS for b in IMAGE_WEIGHTS[1:4]}
    out["sigmoid"] = {f"margin={g:g},s={s:g}": score(sig[(g, s)]) for g in MARGINS for s in SOFTNESS}
    out["gauss-norm"] = {f"s={s:g}": score(gauss[s] / (gauss_w[s] + 1e-3)) for s in SOFTNESS}
    return out


def load(generator: str, size, cases: int, work: Path, seed: int) -> list:
    writer = {"vol25d": write_phantom_dataset, "other": write_other_dataset, "tube": write_tube_dataset,
              "gi": write_gi_phantom_dataset}[generator]
    folder = writer(work / f"{generator}_{size}", cases, size, seed=seed)
    dataset = load_dataset(folder)
    prepared, _, _ = prepare_cases(dataset, dataset.cases, [])
    return prepared


def summarise(per_case: list[dict]) -> list[tuple[str, str, float, float, float]]:
    """Per candidate: the parameter with the best mean over cases, and that mean, min and max."""
    rows = []
    for name in per_case[0]:
        best = max(per_case[0][name], key=lambda key: np.nanmean([case[name][key] for case in per_case]))
        values = [case[name][best] for case in per_case]
        rows.append((name, best, float(np.nanmean(values)), float(np.nanmin(values)), float(np.nanmax(values))))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[48])
    parser.add_argument("--generators", nargs="+", default=["vol25d", "other"], choices=["vol25d", "other", "tube"],
                        help="MRA-like phantom generators measured at each size")
    parser.add_argument("--gi-cases", type=int, default=0,
                        help="also GI-tract-like phantoms (vol25d.data.gi_phantom) at the competition's sizes")
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--directions", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1300)
    parser.add_argument("--name", default="ceiling")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    angles = equal_angles(args.directions)
    lines = [f"# Perfect-view ceiling of the reconstruction ({args.name})", "",
             f"U replaced by the label's own MIPs at m = {args.directions} equally spaced directions; the best "
             "threshold per case; each candidate's shared parameter chosen by the mean over cases. Phantoms "
             "preprocessed as `vol25d train` does (percentile normalisation to [0, 1]). Written by "
             "`experiments/ceiling.py`.", ""]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vol25d-ceiling-") as scratch:
        runs = [(size, generator) for size in args.sizes for generator in args.generators]
        runs += [(None, "gi")] if args.gi_cases else []
        for size, generator in runs:
            cases = load(generator, size, args.gi_cases if generator == "gi" else args.cases, Path(scratch),
                         args.seed)
            per_case = []
            for case in cases:
                per_case.append(candidates(case.image, case.label, angles))
                log.info("%s %s %s: seed %.3f", generator, size, case.name, per_case[-1]["seed"]["-"])
            shape = tuple(cases[0].image.shape[1:])
            title = {"vol25d": f"vol25d phantoms, {size}³", "other": f"other_phantoms.py, {size}³",
                     "tube": f"tube_phantoms.py, {size}³",
                     "gi": "GI-tract-like phantoms (vol25d.data.gi_phantom), 266×266 or 360×310 × 70–99 slices of "
                           "3 mm, mean over the 3 classes"}[generator]
            lines += [f"## {title} ({len(cases)} cases, preprocessed e.g. {shape})", "",
                      "| reconstruction | shared parameter | mean Dice | min | max |", "|---|---|---|---|---|"]
            for name, key, mean, low, high in summarise(per_case):
                lines.append(f"| {name} | {key} | {mean:.3f} | {low:.3f} | {high:.3f} |")
                log.info("%s %s %-10s %-18s %.3f (%.3f–%.3f)", generator, size, name, key, mean, low, high)
            lines.append("")
    lines += ["## Machine", "", machine() + f"; torch threads 1; {time.perf_counter() - start:.0f} s in all", ""]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

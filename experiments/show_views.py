"""What U sees and says: for a checkpoint and held-out cases, one direction's MIP, U's view probabilities, the
label's MIP and where U's view (≥ 0.5) is wrong (red: object where the label has none; blue: missed).

The picture behind ``experiments/results/diagnose.md``'s reading of U's views (issue 13): a row per case.

Usage:
    python experiments/show_views.py CHECKPOINT DATASET[:CASES] ... --out PNG [--view K]

``DATASET:0,1`` takes that dataset's first two cases (default the first); the cases are preprocessed with the
checkpoint's own plan, as prediction does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.prepare import prepare_cases  # noqa: E402
from vol25d.geometry import default_detector  # noqa: E402
from vol25d.infer import Predictor  # noqa: E402
from vol25d.ops import mip  # noqa: E402


def _selection(text: str) -> tuple[Path, list[int]]:
    folder, _, cases = text.partition(":")
    return Path(folder), [int(c) for c in cases.split(",")] if cases else [0]


@torch.no_grad()
def show(checkpoint: Path, selections: list[tuple[Path, list[int]]], out: Path, view: int) -> list[float]:
    """Write the figure; returns the precision of U's thresholded view per row (its share of true object)."""
    predictor = Predictor.load(checkpoint, "cpu")
    model = predictor.model
    rows = [(folder, index) for folder, indices in selections for index in indices]
    figure, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False)
    precisions = []
    for row, (folder, index) in enumerate(rows):
        dataset = load_dataset(folder)
        (case,), _, _ = prepare_cases(dataset, [dataset.cases[index]], [], config=predictor.preprocess)
        x, y = case.image[None].float(), case.label[None].float()
        probabilities, image_views = model.all_view_probabilities(x)
        detector = default_detector(*x.shape[-2:])
        if image_views is None:
            image_views = mip(x[:, :1], model.angles, detector)
        label_views = mip(y, model.angles, detector)
        k = view % model.angles.numel()
        hit, want = probabilities[0, 0, k] >= 0.5, label_views[0, 0, k] >= 0.5
        precisions.append(float((hit & want).sum()) / max(float(hit.sum()), 1.0))
        panels = ((image_views[0, 0, k], "MIP", "gray", 0), (probabilities[0, 0, k], "U", "gray", 0),
                  (label_views[0, 0, k], "label MIP", "gray", 0), (hit.float() - want.float(), "U − label", "bwr", -1))
        for col, (image, title, cmap, low) in enumerate(panels):
            axes[row, col].imshow(image.numpy(), origin="lower", cmap=cmap, vmin=low, vmax=1)
            axes[row, col].set_title(f"{folder.name}/{dataset.cases[index].name}: {title}", fontsize=9)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 3].set_xlabel(f"precision of U's view {precisions[-1]:.2f}", fontsize=9)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=70)
    plt.close(figure)
    return precisions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("datasets", nargs="+", help="MSD folders, each optionally :CASE,CASE (indices)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--view", type=int, default=16, help="direction index k of the m (default 16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    precisions = show(args.checkpoint, [_selection(text) for text in args.datasets], args.out, args.view)
    print(f"wrote {args.out}; precision of U's view per row: {', '.join(f'{p:.2f}' for p in precisions)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the explained reconstruction loses Dice on another generator: U's share against R's and T's (issue 13).

For each seed and each training generator (vol25d's phantoms in a layout, or ``experiments/other_phantoms.py``'s — the
second is in-distribution for the held-out other phantoms, so it separates domain shift from the method),
one model is trained (path 1 then path 2, the settings of ``experiments/reconstruction.py``) and then taken
apart on held-out phantoms of both generators, preprocessed with the checkpoint's own plan:

- ``views``: Dice of U's views (probability ≥ 0.5) against the label's own MIPs (≥ 0.5) at all ``m``
  directions, pooled over views, with their precision and recall: U's error alone (``recall, low D``: the
  recall over the lowest third of the view's rows, where the other generator's trunks enter);
- ``perfect, best``: the perfect-view ceiling of the trained R (the label's MIPs through the trained F and
  the learned margin and softness; the best threshold per case) — R's share;
- ``perfect, init``: the same with R's starting parameters (identity F, margin 0.1, softness 0.3), as
  ``experiments/ceiling.py`` measures it;
- ``U, best``: the trained R of U's actual views, best threshold per case (U's and R's error, not T's);
- ``U, T``: the trained model's own output at 0.5 on the preprocessed grid (T's threshold too);
- ``seed of U, best``: the plain mean of U's views (the seed reconstruction of the same U), best threshold;
- ``no U, best``: the trained R with every view probability 1 (U replaced by "object on every ray"): what
  the image's own weights do without U, best threshold;
- ``native``: the held-out Dice on the native grid at 0.5, as ``reconstruction.py`` reports it.

Prints the figures and writes ``experiments/results/NAME.md``. Runs are kept under ``--keep`` when given.

Usage:
    python experiments/diagnose.py [--seeds 0 1 2] [--train-on vol25d vol25d-mixed other] [--test-on vol25d other]
                                   [--epochs1 6] [--epochs2 2]
                                   [--variant image] [--name diagnose]
    python experiments/diagnose.py --collect results/A.md results/B.md ... --name diagnose
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark import write_results  # noqa: E402
from ceiling import best_dice  # noqa: E402
from other_phantoms import write_other_dataset  # noqa: E402
from reconstruction import held_out  # noqa: E402
from tube_phantoms import write_tube_dataset  # noqa: E402

from vol25d.data.augment import AugmentConfig  # noqa: E402
from vol25d.data.dataset import load_dataset  # noqa: E402
from vol25d.data.phantom import write_phantom_dataset  # noqa: E402
from vol25d.data.prepare import prepare_cases  # noqa: E402
from vol25d.geometry import default_detector  # noqa: E402
from vol25d.infer import Predictor  # noqa: E402
from vol25d.metrics import dice  # noqa: E402
from vol25d.model import Explanation, ModelConfig  # noqa: E402
from vol25d.ops import backproject, backproject_explained, mip  # noqa: E402
from vol25d.train import TrainConfig, train  # noqa: E402

log = logging.getLogger("diagnose")
RESULTS = Path(__file__).resolve().parent / "results"
# Generators of held-out data (and of training data); vol25d's own in the default "tangle" layout.
WRITERS = {"vol25d": write_phantom_dataset, "other": write_other_dataset, "tube": write_tube_dataset}
# Training data only: vol25d's phantoms in the other layouts (make_phantom's ``layout``).
TRAIN_WRITERS = {**WRITERS, "vol25d-spread": partial(write_phantom_dataset, layout="spread"),
                 "vol25d-mixed": partial(write_phantom_dataset, layout="mixed")}
# Training set = seed + this; tests as reconstruction.py.
TRAIN_SEED = {"vol25d": 0, "vol25d-spread": 0, "vol25d-mixed": 0, "other": 3000, "tube": 4000}
TEST_SEED = {"vol25d": 1000, "other": 2000, "tube": 5000}
COLUMNS = ("views", "view precision", "view recall", "recall, low D", "perfect, init", "perfect, best", "U, best", "U, T",
           "seed of U, best", "no U, best", "native")

# Named variants: (model settings, train settings, augmentation settings) beside reconstruction.py's. All but
# "image-head" keep T as it was when they were measured, a head that does not read the image.
_T = {"head_image": False}
VARIANTS = {
    "seed": ({"reconstruction": "seed", **_T}, {}, {}),
    "image": ({"reconstruction": "image", **_T}, {}, {}),
    # T also reads the image (ModelConfig.head_image, the default now): a 3×3×3 convolution of [R ∘ F, image].
    "image-head": ({"reconstruction": "image", "head_image": True}, {}, {}),
    # U with two downsamplings instead of four: a receptive field of a few vessel widths, not the whole view.
    "image-local": ({"reconstruction": "image", "channels": (16, 32, 64), "strides": (2, 2), **_T}, {}, {}),
    "seed-local": ({"reconstruction": "seed", "channels": (16, 32, 64), "strides": (2, 2), **_T}, {}, {}),
    # U held harder to the label's own MIPs.
    "image-views4": ({"reconstruction": "image", **_T}, {"view_loss_weight": 4.0}, {}),
    # Wider intensity augmentation (contrast, offset, gamma, noise): the generators differ most in contrast.
    "image-intensity": ({"reconstruction": "image", **_T}, {}, {
        "intensity_prob": 0.6, "intensity_scale": (0.7, 1.4), "intensity_shift": 0.3,
        "gamma_prob": 0.6, "gamma_range": (0.5, 2.0), "noise_prob": 0.3, "noise_std": 0.2}),
    # A smooth multiplicative bias field (AugmentConfig.bias_prob): the generators' bias fields differ in kind.
    "image-bias": ({"reconstruction": "image", **_T}, {}, {"bias_prob": 0.5, "bias_strength": 0.5}),
    # T normalising R's output per case (instance norm) instead of one learnt scale: a threshold that adapts.
    "image-instance": ({"reconstruction": "image", "head_norm": "instance", **_T}, {}, {}),
}


@torch.no_grad()
def take_apart(checkpoint: Path, test: Path) -> dict[str, list[float]]:
    """The figures of :data:`COLUMNS` per held-out case of ``test`` for one checkpoint."""
    predictor = Predictor.load(checkpoint, "cpu")
    model = predictor.model
    dataset = load_dataset(test)
    prepared, _, _ = prepare_cases(dataset, dataset.cases, [], config=predictor.preprocess)
    out = {name: [] for name in COLUMNS}
    out["native"] = held_out(checkpoint, test)
    image_recon = model.explanation is not None
    init = Explanation(model.config.out_channels) if image_recon else None
    for case in prepared:
        x = case.image[None].float()
        y = case.label[None].float()
        truth = case.label[0] > 0
        plane = tuple(x.shape[-2:])
        probabilities, image_views = model.all_view_probabilities(x)
        if image_views is None:
            image_views = mip(x[:, :1], model.angles, default_detector(*plane))
        perfect = mip(y, model.angles, default_detector(*plane))
        hit, want = probabilities[0, 0] >= 0.5, perfect[0, 0] >= 0.5
        overlap = float((hit & want).sum())
        out["views"].append(dice(hit.numpy(), want.numpy()))
        out["view precision"].append(overlap / max(float(hit.sum()), 1.0))
        out["view recall"].append(overlap / max(float(want.sum()), 1.0))
        low = want[:, : want.shape[1] // 3]  # the lowest third of D (the neck, where other_phantoms' trunks enter)
        out["recall, low D"].append(float((low & hit[:, : want.shape[1] // 3]).sum()) / max(float(low.sum()), 1.0))
        out["perfect, best"].append(best_dice(model.reconstruct(perfect, model.angles, plane, x, image_views)[0, 0], truth))
        if image_recon:
            start = backproject_explained(perfect, image_views, x[:, :1], model.angles, init.margin,
                                          init.log_softness.exp()) / model.angles.numel()
        else:
            start = backproject(perfect, model.angles, plane) / model.angles.numel()
        out["perfect, init"].append(best_dice(start[0, 0], truth))
        out["U, best"].append(best_dice(model.reconstruct(probabilities, model.angles, plane, x, image_views)[0, 0], truth))
        output = model.segment_from_views(probabilities, x, image_views)
        out["U, T"].append(dice((output[0, 0] >= 0.5).numpy(), truth.numpy()))
        out["seed of U, best"].append(best_dice(backproject(probabilities, model.angles, plane)[0, 0], truth))
        everything = torch.ones_like(probabilities)
        out["no U, best"].append(best_dice(model.reconstruct(everything, model.angles, plane, x, image_views)[0, 0], truth))
    return out


def collect(paths: list[Path], out: Path, name: str) -> str:
    """Mean ± sd over the seed rows of earlier results files, per (variant, trained on, tested on)."""
    rows: dict[tuple[str, str, str], list[list[float]]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 5 + len(COLUMNS) and cells[0].isdigit():
                rows.setdefault((cells[1], cells[2], cells[3]), []).append([float(c) for c in cells[4:-1]])
    lines = [f"# Diagnosis over seeds ({name})", "",
             f"Collected from {', '.join(f'[{p.name}]({p.name})' for p in paths)} (settings and machine in each); "
             "mean ± standard deviation over seeds of the per-seed means.", "",
             "| variant | trained on | tested on | seeds | " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for (variant, source, target), values in rows.items():
        table = np.array(values)
        cells = [f"{table[:, i].mean():.3f} ± {table[:, i].std():.3f}" for i in range(table.shape[1])]
        lines.append(f"| {variant} | {source} | {target} | {len(values)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / f"{name}.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-on", nargs="+", default=["vol25d"], choices=sorted(TRAIN_WRITERS))
    parser.add_argument("--test-on", nargs="+", default=sorted(WRITERS), choices=sorted(WRITERS))
    parser.add_argument("--variants", nargs="+", default=["image"], choices=sorted(VARIANTS))
    parser.add_argument("--epochs1", type=int, default=6)
    parser.add_argument("--epochs2", type=int, default=2)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--train-cases", type=int, default=12)
    parser.add_argument("--test-cases", type=int, default=4)
    parser.add_argument("--name", default="diagnose")
    parser.add_argument("--keep", type=Path, help="keep the data and runs in this folder (reused when present)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--collect", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.collect:
        print(collect(args.collect, args.out_dir, args.name))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vol25d-diagnose-") as scratch:
        work = args.keep or Path(scratch)
        for seed in args.seeds:
            tests = {g: WRITERS[g](work / f"test_{g}{seed}", args.test_cases, args.size, seed + TEST_SEED[g])
                     for g in args.test_on}
            for source in args.train_on:
                data = TRAIN_WRITERS[source](work / f"train_{source}{seed}", args.train_cases, args.size,
                                       seed + TRAIN_SEED[source])
                for variant in args.variants:
                    model_settings, train_settings, augment_settings = VARIANTS[variant]
                    model = ModelConfig(directions=64, views=args.views, num_res_units=1, **model_settings)
                    augment = AugmentConfig(**augment_settings)
                    run = work / f"run{seed}_{source}_{variant}_{args.epochs1}_{args.epochs2}"
                    timing = run / "train_seconds.json"
                    if timing.exists():  # kept from an earlier call with the same settings: analyse again only
                        seconds = json.loads(timing.read_text())["seconds"]
                    else:
                        start = time.perf_counter()
                        first = train(data, run, TrainConfig(path=1, epochs=args.epochs1, device="cpu", seed=seed,
                                                             augment=augment, **train_settings),
                                      model_config=model, quiet=True)
                        train(data, run, TrainConfig(path=2, epochs=args.epochs2, device="cpu", seed=seed,
                                                     augment=augment, **train_settings),
                              init=first.checkpoint, quiet=True)
                        seconds = time.perf_counter() - start
                        timing.write_text(json.dumps({"seconds": seconds}))
                    for target, folder in tests.items():
                        figures = take_apart(run / "path2.pt", folder)
                        row = {"seed": seed, "variant": variant, "source": source, "target": target,
                               "train_s": seconds, **{k: float(np.mean(v)) for k, v in figures.items()}}
                        rows.append(row)
                        log.info("%s", json.dumps(row))
    lines = [f"# Diagnosis of the explained reconstruction ({args.name})", "",
             f"Training: {args.train_cases} phantoms of {args.size}³ of the named generator per seed, path 1 "
             f"{args.epochs1} epochs + path 2 {args.epochs2} epochs, m = 64, p = {args.views}, U with 1 residual "
             "unit per level, otherwise `vol25d train`'s defaults (as experiments/reconstruction.py). Held out: "
             f"{args.test_cases} unseen phantoms of each generator per seed (the test sets of reconstruction.py). "
             "Columns as in the docstring of `experiments/diagnose.py`: Dice means over cases; `best` = best "
             "threshold per case on the preprocessed grid.", "",
             "| seed | variant | trained on | tested on | " + " | ".join(COLUMNS) + " | train s |",
             "|---|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for row in rows:
        lines.append(f"| {row['seed']} | {row['variant']} | {row['source']} | {row['target']} | "
                     + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + f" | {row['train_s']:.0f} |")
    write_results(lines, "; torch threads 1; shared with another agent's jobs (contended)", args.out_dir, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

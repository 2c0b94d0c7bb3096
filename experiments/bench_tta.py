"""Does test-time augmentation pay for the random 2.5D U-Net? Held-out Dice and prediction time of one quickly
trained checkpoint with: no TTA; ``predict --tta`` (the mean over the input and its mirrors along each of D,
H and W: four passes); more directions than the model's m at inference (2·m: the same weights, twice the
views); and both.

Trains the checkpoint itself (phantoms of 48³, path 1 then path 2, on the CPU with one thread; a smaller
schedule than the demo's), unless ``--checkpoint`` names one, and predicts held-out phantoms of another
seed. Prints a table and writes it, with the machine and its load, to ``experiments/results/tta.md``; the
docs/benchmarks.md and the default of ``vol25d predict --tta`` follow it.

Usage: ``python experiments/bench_tta.py [--checkpoint RUN/path2.pt] [--train 10] [--test 6] [--epochs 6]
[--note TEXT]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import cpu_count, machine_line, utc_now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    total = prediction.sum() + reference.sum()
    return 1.0 if total == 0 else float(2 * (prediction & reference).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint (default: train one here)")
    parser.add_argument("--train", type=int, default=10, help="training phantoms (default 10)")
    parser.add_argument("--test", type=int, default=6, help="held-out phantoms (default 6)")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=6, help="path-1 epochs (path 2: half as many, at least 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "tta.md")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vol25d.data.phantom import write_phantom_dataset
    from vol25d.infer import Predictor
    from vol25d.io import read_volume
    from vol25d.model import ModelConfig, Random25DUNet
    from vol25d.train import TrainConfig, train

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        test = write_phantom_dataset(folder / "test", args.test, args.size, seed=1000)
        checkpoint, trained = args.checkpoint, "given"
        if checkpoint is None:
            data = write_phantom_dataset(folder / "data", args.train, args.size, seed=0)
            model = ModelConfig(directions=64, views=16, num_res_units=1)
            train(data, folder / "run", TrainConfig(path=1, epochs=args.epochs, steps_per_case=8, device="cpu"),
                  model_config=model, quiet=True)
            path2 = max(2, args.epochs // 2)
            result = train(data, folder / "run", TrainConfig(path=2, epochs=path2, steps_per_case=8, device="cpu"),
                           init=folder / "run" / "path1.pt", quiet=True)
            checkpoint = result.checkpoint
            trained = (f"trained here: {args.train} phantoms of {args.size}³, path 1 for {args.epochs} epochs of 8 steps "
                       f"per case (m = 64, p = 16, U of one residual unit per level), path 2 for {path2} epochs; "
                       f"{time.perf_counter() - started:.0f} s")
        predictor = Predictor.load(checkpoint, "cpu")
        m = predictor.model.config.directions
        denser = Random25DUNet.from_config(ModelConfig.from_dict({**predictor.model.config.to_dict(), "directions": 2 * m}))
        denser.load_state_dict(predictor.model.state_dict())
        denser.eval()
        if predictor.model.unet_frozen:
            denser.freeze_unet()
        models = {"m": predictor.model, "2m": denser}
        variants = [("none", "m", False), ("mirrors (--tta)", "m", True), (f"2·m = {2 * m} directions", "2m", False),
                    ("mirrors and 2·m", "2m", True)]
        cases = sorted((test / "imagesTr").iterdir())
        scores = {name: [] for name, _, _ in variants}
        seconds = {name: [] for name, _, _ in variants}
        change = {name: [] for name, _, _ in variants}  # largest change of a voxel's probability against none
        for image_path in cases:
            image = read_volume(image_path)
            label = read_volume(test / "labelsTr" / image_path.name.replace("_0000", ""))
            predictor.probabilities([image])  # warm-up
            for name, which, tta in variants:
                predictor.model = models[which]
                start = time.perf_counter()
                probabilities = predictor.probabilities([image], tta=tta)
                seconds[name].append(time.perf_counter() - start)
                scores[name].append(_dice(predictor.labels(probabilities), label.array))
                if name == "none":
                    reference = probabilities
                change[name].append(float(np.abs(probabilities - reference).max()))
            predictor.model = models["m"]
            print(image_path.name, {name: f"{values[-1]:.3f}" for name, values in scores.items()}, flush=True)
    load_end = os.getloadavg()[0]

    base = np.array(scores["none"])
    rows = []
    for name, _, _ in variants:
        values = np.array(scores[name])
        rows.append(f"| {name} | {values.mean():.3f} | {(values - base).mean():+.3f} | "
                    f"{', '.join(f'{v:.3f}' for v in values)} | {max(change[name]):.3f} | {statistics.median(seconds[name]):.2f} s |")
    cpus = cpu_count()
    text = "\n".join([
        "# Test-time augmentation: held-out Dice and time",
        "",
        f"Written by `python experiments/bench_tta.py` on {utc_now()}.",
        "",
        f"- Machine: {machine_line()}; {platform.platform()}; torch on {args.threads} thread(s).",
        f"- Load average {load_start:.1f} at the start and {load_end:.1f} at the end on {cpus} CPU(s)"
        + (" — other jobs shared the CPU, so the times are noisy upper bounds (their ratios hold better)."
           if max(load_start, load_end) > 0.5 else "."),
        *([f"- Note: {args.note}"] if args.note else []),
        f"- Checkpoint: {trained}.",
        f"- Held out: {len(cases)} phantoms of {args.size}³ of another seed (1000); Dice of the labels at threshold 0.5; "
        "time: the median over the cases of `Predictor.probabilities` (preprocessing, model, restoring the grid).",
        "",
        "| TTA | mean Dice | change vs none | Dice per case | largest change of a probability | time per case |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

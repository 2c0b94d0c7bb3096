"""The random 2.5D U-Net against 3-D, patch-wise 3-D, 2-D and stacked-2.5-D U-Nets: same data, same split,
same preprocessing, augmentation, optimiser, loss and training-time budget per method (issue 7).

Usage:
    python experiments/benchmark.py [--budget-s 600] [--size 128] [--n-train 40] [--n-test 10]
                                    [--data MSD_FOLDER] [--name benchmark] [--out-dir DIR] [--sweep] [--smoke]
                                    [--methods vol25d,slice2d,...] [--seed 0]
    python experiments/benchmark.py --collect results/A.md results/B.md ... --name NAME

Methods (names as in the output):

- ``vol25d``: :func:`vol25d.train.train`, path 1 then path 2, 80 % / 20 % of the budget. Seconds become epochs
  without touching the library: one epoch of each path is timed first in a scratch run folder (not counted in
  the budget), then the real path runs ``floor(share / epoch seconds)`` epochs (at least 1). Its Dice is
  reported after path 1 and after path 2 (the path-2 gain). It validates on 20 % of the training folder to pick
  its checkpoint, as ``vol25d train`` does; the baselines train on the same remaining 80 % and keep their last
  weights.
- ``unet3d``: MONAI 3-D ``UNet`` on the whole volume zero-padded to a multiple of 16.
- ``unet3d-patch``: the same network on 96³ patches, each side at most the volume's (rounded down to a
  multiple of 16; a third of the patches centred on foreground), inferred with MONAI
  ``sliding_window_inference`` (overlap 0.25). A patch larger than the volume would train on zero padding.
- ``slice2d``: MONAI 2-D ``UNet`` on single axial slices (``D`` of the canonical ``(D, H, W)`` grid), 8 random
  slices of one augmented volume a step, their Dice taken together as over one volume.
- ``stack25d``: the 2-D ``UNet`` on 5 adjacent slices as channels (edges repeated), predicting the middle one,
  8 a step as for ``slice2d``.

Every baseline trains on the tensors of :func:`vol25d.data.prepare.prepare_cases` (vol25d's own preprocessing,
planned from the same training cases), augments the whole 3-D volume with :func:`vol25d.data.augment.augment`
before slicing or cropping, and uses vol25d's loss (MONAI ``DiceLoss`` + BCE on sigmoid outputs), AdamW with
vol25d's lr (3e-3), weight decay and warm-up + cosine schedule, and bf16 autocast on CUDA. A baseline trains
for wall time, after one warm-up step (not counted): until its budget is spent, its learning rate following the
schedule over the elapsed fraction of the budget. Its budget is ``--budget-s`` or, when vol25d ran first and
took longer (its epochs are planned from one timed epoch, and include validation), vol25d's own seconds.
All methods, vol25d included (its network applied to the same preprocessed tensor), are scored on the
preprocessed grid, HD95 in mm at the preprocessed spacing.

``--reconstruction seed`` trains vol25d with the seed method's ``R ∘ F`` instead of the default explained
back-projection (``ModelConfig.reconstruction="image"``), and ``--no-head-image`` with a head T that does not
read the image (``ModelConfig.head_image``); ``--collect`` names vol25d's row by both.

``--methods`` picks a subset (comma-separated names from the list above; default all), so that a comparison
fits in minutes; every chosen method still gets the same data, budget, augmentation and loss.

``--smoke`` runs everything on tiny phantoms and tiny networks on CPU in a few tens of seconds (tests); it
needs ``--out-dir`` and never writes into ``experiments/results/``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from vol25d.data.augment import AugmentConfig, augment
from vol25d.data.dataset import load_dataset, split_cases
from vol25d.data.phantom import write_phantom_dataset
from vol25d.data.prepare import prepare_cases
from vol25d.infer import Predictor
from vol25d.metrics import cldice, dice, hd95
from vol25d.model import ModelConfig, Random25DUNet
from vol25d.device import amp_enabled, autocast, resolve_device
from vol25d.geometry import random_directions
from vol25d.train import Objective, TrainConfig, train, warmup_cosine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("vol25d", "unet3d", "unet3d-patch", "slice2d", "stack25d")
SWEEP_SIZES = ((128, 128, 128), (256, 256, 256), (384, 384, 384), (256, 512, 512))  # (D, H, W)
SMOKE_SWEEP_SIZES = ((16, 16, 16), (16, 24, 24))  # --smoke --sweep: the same code on the CPU, memory not measured
VAL_FRACTION = 0.2
SLICES_PER_STEP = 8
STACK = 5
CPU_MEMORY = "not measured (CPU)"


@dataclasses.dataclass
class Settings:
    budget_s: float
    size: int
    n_train: int
    n_test: int
    data: Path | None
    device: torch.device
    smoke: bool
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    reconstruction: str = ModelConfig().reconstruction
    head_image: bool = ModelConfig().head_image

    @property
    def channels(self) -> tuple[int, ...]:
        return (4, 8, 16) if self.smoke else (16, 32, 64, 128, 256)

    @property
    def strides(self) -> tuple[int, ...]:
        return (2, 2) if self.smoke else (2, 2, 2, 2)

    @property
    def multiple(self) -> int:
        return 2 ** len(self.strides)

    @property
    def patch(self) -> int:
        """The cubic patch side of ``unet3d-patch`` when the volume is large enough; see :meth:`patch_for`."""
        return 16 if self.smoke else 96

    def patch_for(self, shape) -> tuple[int, ...]:
        """``unet3d-patch``'s patch for a volume of ``shape`` ``(D, H, W)``: :attr:`patch` per axis, at most the
        axis (rounded down to a multiple of the network's :attr:`multiple`, and at least that multiple)."""
        return tuple(max(self.multiple, min(self.patch, (n // self.multiple) * self.multiple)) for n in shape)

    @property
    def amp(self) -> bool:
        return amp_enabled(self.device)


# --- measuring --------------------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device):
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _gib(value) -> str:
    return CPU_MEMORY if value is None else f"{value / 2**30:.2f} GiB"


def _score(predict, cases, device) -> dict:
    """Dice, HD95 (mm), clDice averaged over cases and classes, and the mean inference seconds per volume."""
    dices, distances, centrelines, seconds = [], [], [], []
    for case in cases:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            probabilities = predict(case.image).float()
        _sync(device)
        seconds.append(time.perf_counter() - start)
        prediction = (probabilities >= 0.5).cpu().numpy()
        reference = case.label.numpy() > 0
        for k in range(reference.shape[0]):
            dices.append(dice(prediction[k], reference[k]))
            distances.append(hd95(prediction[k], reference[k], case.info.spacing_dhw))
            centrelines.append(cldice(prediction[k], reference[k]))
    return {"dice": float(np.mean(dices)), "hd95": float(np.mean(distances)), "cldice": float(np.mean(centrelines)),
            "infer_s": float(np.mean(seconds))}


# --- baselines ----------------------------------------------------------------------------------------------

def _unet(settings: Settings, dims: int, in_channels: int, out_channels: int) -> UNet:
    return UNet(spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, channels=settings.channels,
                strides=settings.strides, num_res_units=2)


def _pad_to(x: torch.Tensor, multiple: int, dims: int) -> torch.Tensor:
    """Zero-pad the last ``dims`` axes at their ends to a multiple of ``multiple`` (at least ``multiple``)."""
    pads = []
    for n in reversed(x.shape[-dims:]):
        pads += [0, max(multiple, math.ceil(n / multiple) * multiple) - n]
    return torch.nn.functional.pad(x, pads)


def _stack(volume: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(B, C, D, H, W)`` → ``(len(indices), C·STACK, H, W)``: each slice with its neighbours (edges repeated)."""
    half = STACK // 2
    depth = volume.shape[2]
    around = (indices[:, None] + torch.arange(-half, half + 1, device=indices.device)[None]).clamp(0, depth - 1)
    slices = volume[0][:, around]  # (C, n, STACK, H, W)
    return slices.permute(1, 0, 2, 3, 4).flatten(1, 2)


class Baseline:
    """One baseline: how a step's input and target come from an augmented volume, and how a volume is inferred."""

    def __init__(self, name: str, settings: Settings, in_channels: int, out_channels: int):
        self.name, self.settings = name, settings
        dims = 3 if name.startswith("unet3d") else 2
        channels = in_channels * (STACK if name == "stack25d" else 1)
        self.net = _unet(settings, dims, channels, out_channels).to(settings.device)

    def batch(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        """Training input and target from an augmented ``(1, C, D, H, W)`` image and label."""
        s = self.settings
        if self.name == "unet3d":
            return _pad_to(image, s.multiple, 3), _pad_to(label, s.multiple, 3)
        if self.name == "unet3d-patch":
            patch = s.patch_for(image.shape[2:])
            grow = [m for n, q in zip(reversed(image.shape[2:]), reversed(patch)) for m in (0, max(0, q - n))]
            image, label = torch.nn.functional.pad(image, grow), torch.nn.functional.pad(label, grow)
            shape = image.shape[2:]
            foreground = label.sum(1)[0].nonzero()
            if len(foreground) and torch.rand((), generator=generator) < 1 / 3:
                centre = foreground[torch.randint(len(foreground), (), generator=generator)].tolist()
                corner = [min(max(c - q // 2, 0), n - q) for c, n, q in zip(centre, shape, patch)]
            else:
                corner = [int(torch.randint(n - q + 1, (), generator=generator)) for n, q in zip(shape, patch)]
            box = tuple(slice(c, c + q) for c, q in zip(corner, patch))
            return image[(..., *box)], label[(..., *box)]
        depth = image.shape[2]
        indices = torch.randint(depth, (min(SLICES_PER_STEP, depth),), generator=generator).to(image.device)
        image, label = _pad_to(image, s.multiple, 2), _pad_to(label, s.multiple, 2)
        target = label[0][:, indices].transpose(0, 1)
        if self.name == "slice2d":
            return image[0][:, indices].transpose(0, 1), target
        return _stack(image, indices), target

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(K, D, H, W)`` of a preprocessed ``(C, D, H, W)`` image."""
        s = self.settings
        self.net.eval()
        x = image[None].to(s.device)
        with autocast(s.device, s.amp):
            if self.name == "unet3d":
                out = self.net(_pad_to(x, s.multiple, 3))[..., : x.shape[2], : x.shape[3], : x.shape[4]]
            elif self.name == "unet3d-patch":
                out = sliding_window_inference(x, s.patch_for(x.shape[2:]), 4, self.net, overlap=0.25,
                                               padding_mode="constant")
            else:
                padded = _pad_to(x, s.multiple, 2)
                parts = []
                for start in range(0, x.shape[2], 32):
                    indices = torch.arange(start, min(start + 32, x.shape[2]), device=s.device)
                    if self.name == "slice2d":
                        inputs = padded[0][:, indices].transpose(0, 1)
                    else:
                        inputs = _stack(padded, indices)
                    parts.append(self.net(inputs).float())
                out = torch.cat(parts).transpose(0, 1)[None, :, :, : x.shape[3], : x.shape[4]]
        return torch.sigmoid(out.float())[0]


def train_baseline(name: str, settings: Settings, train_data, augment_config: AugmentConfig,
                   budget_s: float | None = None) -> tuple[Baseline, dict]:
    """Train baseline ``name`` for ``budget_s`` seconds of wall time (default ``settings.budget_s``)."""
    budget_s = settings.budget_s if budget_s is None else budget_s
    torch.manual_seed(settings.seed)
    k, c = train_data[0].label.shape[0], train_data[0].image.shape[0]
    model = Baseline(name, settings, c, k)
    config = TrainConfig(path=2, device=str(settings.device))  # path 2: Dice + BCE without the views' term
    objective = Objective(config)
    generator = torch.Generator().manual_seed(settings.seed)
    device = settings.device

    def step(index: int) -> torch.Tensor:
        case = train_data[index]
        image, label = case.image[None].to(device), case.label[None].to(device).float()
        image, label = augment(image, label, augment_config)
        inputs, target = model.batch(image, label, generator)
        with autocast(device, settings.amp):
            output = torch.sigmoid(model.net(inputs).float())
        if output.dim() == 4:
            # The step's slices scored together, as one (1, K, n, H, W) volume: the same Dice as on a volume
            # (per-slice Dice would push the many empty slices, hence everything, to 0).
            output, target = output.transpose(0, 1)[None], target.transpose(0, 1)[None]
        loss = objective(output, target)
        loss.backward()
        return loss

    # One warm-up step (not counted: first-call overheads), then steps until the budget's wall time is spent,
    # the learning rate following vol25d's warm-up + cosine over the elapsed fraction of the budget. A number of
    # steps planned from timed steps (as before) ran short whenever the timed steps were slow: unet3d trained
    # 185 s of a 300 s budget in one run.
    model.net.train()
    step(0)
    model.net.zero_grad(set_to_none=True)
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    _reset_memory(device)
    _sync(device)
    start = time.perf_counter()
    steps, last_s = 0, 0.0
    order: list[int] = []
    while (elapsed := time.perf_counter() - start) + 0.5 * last_s < budget_s:
        if not order:
            order = torch.randperm(len(train_data), generator=generator).tolist()
        for group in optimizer.param_groups:  # the lr of the step's middle
            group["lr"] = config.lr * warmup_cosine(min(1.0, (elapsed + 0.5 * last_s) / budget_s))
        optimizer.zero_grad(set_to_none=True)
        step(order.pop())
        optimizer.step()
        _sync(device)
        steps += 1
        last_s = time.perf_counter() - start - elapsed
    return model, {"steps": steps, "train_s": time.perf_counter() - start, "last_step_s": last_s,
                   "train_mem": _peak_memory(device)}


# --- vol25d -------------------------------------------------------------------------------------------------

def _epoch_seconds(metrics_csv: Path) -> float:
    with metrics_csv.open() as handle:
        return max(1e-3, float(list(csv.DictReader(handle))[-1]["seconds"]))


def _model_config(settings: Settings) -> ModelConfig:
    """vol25d's settings in the benchmark: the defaults, or a tiny model with --smoke; the reconstruction and
    head asked for."""
    if settings.smoke:
        return ModelConfig(channels=settings.channels, strides=settings.strides, directions=8, views=2, filter_radius=8,
                           reconstruction=settings.reconstruction, head_image=settings.head_image)
    return ModelConfig(reconstruction=settings.reconstruction, head_image=settings.head_image)


def run_vol25d(settings: Settings, train_dir: Path, work: Path, test_data) -> dict:
    model_config = _model_config(settings)
    base = dict(steps_per_case=2 if settings.smoke else 12, val_fraction=VAL_FRACTION, device=str(settings.device),
                seed=settings.seed)
    n_train = len(split_cases(load_dataset(train_dir).cases, VAL_FRACTION, settings.seed)[0])
    # Seconds → epochs: one timed epoch of each path in a scratch folder.
    # The epoch's seconds come from pathN_metrics.csv (training and validation, without the data loading).
    probe = train(train_dir, work / "probe", TrainConfig(path=1, epochs=1, **base), model_config=model_config,
                  quiet=True)
    epochs1 = max(1, int(0.8 * settings.budget_s / _epoch_seconds(work / "probe" / "path1_metrics.csv")))
    train(train_dir, work / "probe", TrainConfig(path=2, epochs=1, **base), init=probe.checkpoint, quiet=True)
    epochs2 = max(1, int(0.2 * settings.budget_s / _epoch_seconds(work / "probe" / "path2_metrics.csv")))
    run = work / "vol25d"
    _reset_memory(settings.device)
    first = train(train_dir, run, TrainConfig(path=1, epochs=epochs1, **base), model_config=model_config, quiet=True)
    second = train(train_dir, run, TrainConfig(path=2, epochs=epochs2, **base), init=first.checkpoint, quiet=True)
    train_mem = _peak_memory(settings.device)
    scores = {}
    for tag, checkpoint in (("path1", first.checkpoint), ("path2", second.checkpoint)):
        predictor = Predictor.load(checkpoint, str(settings.device))
        _reset_memory(settings.device)

        def predict(image, model=predictor.model):
            with autocast(settings.device, settings.amp):
                return model(image[None].to(settings.device))[0]

        scores[tag] = _score(predict, test_data, settings.device)
        scores[tag]["infer_mem"] = _peak_memory(settings.device)
    steps = (epochs1 + epochs2) * n_train * base["steps_per_case"]
    result = dict(scores["path2"], steps=steps, train_s=first.seconds + second.seconds, train_mem=train_mem,
                  dice_path1=scores["path1"]["dice"], epochs=(epochs1, epochs2))
    return result


# --- data ---------------------------------------------------------------------------------------------------

def make_data(settings: Settings, work: Path) -> tuple[Path, list, list]:
    """The training folder vol25d trains on, and the split's test cases (for scoring)."""
    if settings.data is None:
        train_dir = write_phantom_dataset(work / "train", settings.n_train, settings.size, seed=settings.seed)
        test_dir = write_phantom_dataset(work / "test", settings.n_test, settings.size, seed=settings.seed + 1)
        return train_dir, load_dataset(train_dir).cases, load_dataset(test_dir).cases
    dataset = load_dataset(settings.data)
    fraction = settings.n_test / len(dataset.cases) if settings.n_test < len(dataset.cases) else 0.2
    train_cases, test_cases = split_cases(dataset.cases, fraction, settings.seed + 1)
    # vol25d.train takes a folder: link the training cases into one.
    train_dir = work / "train"
    for folder in ("imagesTr", "labelsTr"):
        (train_dir / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(settings.data) / "dataset.json", train_dir / "dataset.json")
    for case in train_cases:
        for path in case.image_paths:
            (train_dir / "imagesTr" / path.name).symlink_to(path.resolve())
        (train_dir / "labelsTr" / case.label_path.name).symlink_to(case.label_path.resolve())
    return train_dir, train_cases, test_cases


# --- sweep --------------------------------------------------------------------------------------------------

def sweep(settings: Settings, sizes=SWEEP_SIZES) -> list[dict]:
    """One training step of each method on a random whole volume of each size; peak memory or OOM."""
    rows = []
    device = settings.device
    config = TrainConfig(path=1, device=str(device))
    for shape in sizes:
        for name in settings.methods:
            row = {"method": name, "shape": shape}
            try:
                _reset_memory(device)
                image = torch.randn(1, 1, *shape, device=device)
                label = (torch.rand(1, 1, *shape, device=device) > 0.99).float()
                if name == "vol25d":
                    model = Random25DUNet.from_config(_model_config(settings)).to(device).train()
                    objective = Objective(config)
                    angles = random_directions(model.config.directions, model.config.views,
                                               torch.Generator().manual_seed(0)).to(device)
                    from vol25d.ops import mip

                    with autocast(device, settings.amp):
                        output, views = model(image, angles, return_views=True)
                        loss = objective(output.float(), label, views.float(), mip(label, angles.to(device)))
                    loss.backward()
                else:
                    model = Baseline(name, settings, 1, 1)
                    model.net.train()
                    inputs, target = model.batch(image, label, torch.Generator().manual_seed(0))
                    with autocast(device, settings.amp):
                        loss = Objective(TrainConfig(path=2))(torch.sigmoid(model.net(inputs).float()), target)
                    loss.backward()
                row["memory"] = _peak_memory(device)
            except torch.cuda.OutOfMemoryError:
                row["memory"] = "OOM"
            finally:
                model = image = label = loss = None
                torch.cuda.empty_cache()
            rows.append(row)
            print(f"sweep {name} {shape}: {row['memory'] if row['memory'] == 'OOM' else _gib(row['memory'])}",
                  flush=True)
    return rows


# --- report -------------------------------------------------------------------------------------------------

def write_results(lines: list[str], note: str, out_dir: Path, name: str) -> str:
    """Finish a results report with its machine section (``note`` after the machine line), write it to
    ``out_dir/name.md``, print it and return its text."""
    text = "\n".join([*lines, "", "## Machine", "", machine() + note, ""])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(text)
    print(text)
    return text


def machine() -> str:
    """The report's machine line: :func:`_provenance.machine_line` (CPU, GPU, torch, commit, time)."""
    return machine_line()


def _fmt(value: float, digits: int = 3) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def report(settings: Settings, results: dict, shape, sweep_rows, out_dir: Path, name: str) -> str:
    phantoms = (f"phantoms {settings.size}³, {settings.n_train} training (vol25d holds out {VAL_FRACTION:.0%} for "
                f"validation; the baselines train on the same rest) + {settings.n_test} test")
    lines = [f"# Benchmark: {name}", "",
             "Same split, preprocessing (vol25d's), augmentation, loss (Dice + BCE), AdamW + warm-up/cosine, bf16 "
             "autocast on CUDA, and training budget per method. All methods are scored on the preprocessed grid "
             "(vol25d too: its network on the preprocessed tensor), HD95 at the preprocessed spacing.", "",
             "| method | Dice | HD95 (mm) | clDice | train memory | inference memory | steps | train s | "
             "inference s/volume |", "|---|---|---|---|---|---|---|---|---|"]
    for method in settings.methods:
        r = results[method]
        lines.append(f"| {method} | {_fmt(r['dice'])} | {_fmt(r['hd95'], 2)} | {_fmt(r['cldice'])} | "
                     f"{_gib(r['train_mem'])} | {_gib(r['infer_mem'])} | {r['steps']} | {r['train_s']:.1f} | "
                     f"{r['infer_s']:.3f} |")
    if "vol25d" in results:
        v = results["vol25d"]
        lines += ["", f"vol25d path-2 gain: Dice {_fmt(v['dice_path1'])} after path 1 → {_fmt(v['dice'])} after path 2 "
                  f"({v['dice'] - v['dice_path1']:+.3f}); epochs {v['epochs'][0]} (path 1) + {v['epochs'][1]} (path 2). "
                  "The table's vol25d row is after path 2; its train seconds include `train`'s own data loading and "
                  "validation, its steps are path 1's plus path 2's."]
    lines += ["", "## Machine", "", machine(), "", "## Settings", "",
              f"- methods: {', '.join(settings.methods)}; vol25d's reconstruction: {settings.reconstruction}; "
              f"T reads the image: {'yes' if settings.head_image else 'no'}",
              f"- budget {settings.budget_s:g} s of training per method (vol25d: 80 % path 1, 20 % path 2, seconds → "
              "epochs from a timed first epoch, not counted; baselines: wall time after a warm-up step, at least "
              "vol25d's seconds)",
              f"- data: {settings.data or phantoms}",
              f"- preprocessed test volume (D, H, W): {tuple(shape)}",
              f"- device {settings.device}; baselines: MONAI UNet channels {settings.channels}, strides "
              f"{settings.strides}, 2 residual units; patch {settings.patch}³ at most the volume "
              f"({'×'.join(map(str, settings.patch_for(shape)))} here); {SLICES_PER_STEP} slices per 2-D step; "
              f"stack of {STACK}",
              f"- smoke: {settings.smoke}", "", "## Sweep: one training step on a whole volume", ""]
    if sweep_rows is None:
        lines.append("not requested (--sweep)")
    elif not sweep_rows:
        lines.append("not run on CPU")
    else:
        sizes = list(dict.fromkeys(row["shape"] for row in sweep_rows))
        lines += ["| method | " + " | ".join("×".join(map(str, s)) for s in sizes) + " | largest that fits |",
                  "|---|" + "---|" * (len(sizes) + 1)]
        for method in settings.methods:
            cells = [row["memory"] if row["memory"] == "OOM" else _gib(row["memory"])
                     for row in sweep_rows if row["method"] == method]
            fits = [row["shape"] for row in sweep_rows if row["method"] == method and row["memory"] != "OOM"]
            largest = "×".join(map(str, max(fits, key=np.prod))) if fits else "none"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {largest} |")
        lines += ["", "Peak GPU memory of one training step (forward, loss, backward) on a random whole volume; sizes "
                  "are (D, H, W), D axial. unet3d-patch trains on one patch whatever the volume, and slice2d and "
                  f"stack25d on {SLICES_PER_STEP} slices of it, so their figures are a step's."]
    return "\n".join(lines) + "\n"


def collect(paths: list[Path], out_dir: Path, name: str) -> str:
    """Mean ± sd over runs (one per seed) of earlier reports, per method; vol25d's row is named by its
    reconstruction and by whether T reads the image (reports from before that setting: it did not). The
    reports must share their budget and data settings: a table over runs of different budgets would not be
    one comparison, so a mismatch raises ``ValueError`` naming the two files."""
    rows: dict[str, list[list[float]]] = {}
    settings_of: dict[str, Path] = {}
    for path in paths:
        text = path.read_text()
        same = "\n".join(line for line in text.splitlines() if line.startswith(("- budget", "- data:")))
        if settings_of and same not in settings_of:
            raise ValueError(f"{path} was run with other budget or data settings than {next(iter(settings_of.values()))}")
        settings_of.setdefault(same, path)
        reconstruction = text.split("vol25d's reconstruction: ", 1)[1].split()[0].rstrip(";") if "vol25d's reconstruction: " in text else "seed"
        if "T reads the image: yes" in text:
            reconstruction += ", T reads the image"
        for line in text.split("## Machine", 1)[0].splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells[0] in METHODS:
                label = f"vol25d ({reconstruction})" if cells[0] == "vol25d" else cells[0]
                rows.setdefault(label, []).append([float(cells[1]), float(cells[2]), float(cells[3])])
    lines = [f"# Benchmark over runs ({name})", "",
             f"Collected from {', '.join(f'[{p.name}]({p.name})' for p in paths)} (settings and machine in each, "
             "one seed per run); mean ± standard deviation over the runs, and the worst run's Dice.", "",
             "| method | runs | Dice | worst run's Dice | HD95 (mm) | clDice |", "|---|---|---|---|---|---|"]
    for label, values in sorted(rows.items(), key=lambda item: -np.mean([v[0] for v in item[1]])):
        table = np.array(values)
        cells = [f"{table[:, i].mean():.3f} ± {table[:, i].std():.3f}" for i in range(3)]
        lines.append(f"| {label} | {len(values)} | {cells[0]} | {table[:, 0].min():.3f} | {cells[1]} | {cells[2]} |")
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(text)
    print(text)
    return text


def parse_methods(text: str) -> tuple[str, ...]:
    """``"vol25d,slice2d"`` → ``("vol25d", "slice2d")`` in the order of :data:`METHODS`; an unknown or empty
    list raises ``ValueError`` naming the known methods."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise ValueError(f"--methods {text!r}: unknown method(s) {unknown or '(none given)'}; choose from "
                         f"{', '.join(METHODS)}, comma-separated")
    return tuple(name for name in METHODS if name in names)


def plot(results: dict, shape, sweep_rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    voxels = int(np.prod(shape))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for method in results:
        left.scatter([voxels], [results[method]["dice"]], label=method)
        points = [(int(np.prod(r["shape"])), r["memory"] / 2**30) for r in sweep_rows or []
                  if r["method"] == method and r["memory"] not in ("OOM", None)]
        if results[method]["train_mem"] is not None:
            points.append((voxels, results[method]["train_mem"] / 2**30))
        if points:
            points.sort()
            right.plot(*zip(*points), marker="o", label=method)
    left.set(xscale="log", xlabel="voxels per volume", ylabel="test Dice", title="Dice")
    left.legend()
    right.set(xscale="log", xlabel="voxels per volume", ylabel="peak training memory (GiB)", title="Memory")
    if not right.lines:
        right.text(0.5, 0.5, CPU_MEMORY, ha="center", va="center", transform=right.transAxes)
    else:
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=600.0, help="training seconds per method")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--n-train", type=int, default=40)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--data", type=Path, help="an MSD-layout folder instead of phantoms")
    parser.add_argument("--name", default="benchmark")
    parser.add_argument("--out-dir", type=Path, help=f"where the Markdown and PNG go (default {RESULTS})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sweep", action="store_true", help="largest whole volume per method (GPU; with --smoke "
                        "tiny sizes on the CPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny run on CPU; needs --out-dir")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    parser.add_argument("--reconstruction", choices=("seed", "image"), default=ModelConfig().reconstruction,
                        help=f"vol25d's ModelConfig.reconstruction (default {ModelConfig().reconstruction})")
    parser.add_argument("--head-image", action=argparse.BooleanOptionalAction, default=ModelConfig().head_image,
                        help="vol25d's ModelConfig.head_image: T reads the image (default on)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, split, weights and draws (default 0)")
    parser.add_argument("--collect", type=Path, nargs="+", metavar="REPORT",
                        help="summarise earlier reports (one per seed) into --name: mean ± sd per method")
    args = parser.parse_args(argv)
    if args.collect:
        try:
            collect(args.collect, args.out_dir or RESULTS, args.name)
        except (OSError, ValueError) as error:
            parser.error(str(error))
        return
    try:
        methods = parse_methods(args.methods)
    except ValueError as error:
        parser.error(str(error))
    if args.smoke:
        if args.out_dir is None:
            parser.error("--smoke writes into a temporary folder: pass --out-dir")
        args.size, args.n_train, args.n_test, args.budget_s, args.device = 24, 4, 2, 2.0, "cpu"
    out_dir = args.out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.budget_s, args.size, args.n_train, args.n_test, args.data, resolve_device(args.device),
                        args.smoke, seed=args.seed, methods=methods, reconstruction=args.reconstruction,
                        head_image=args.head_image)
    with tempfile.TemporaryDirectory(prefix="vol25d-benchmark-") as scratch:
        work = Path(scratch)
        train_dir, train_cases_all, test_cases = make_data(settings, work)
        dataset = load_dataset(train_dir)
        train_cases, _ = split_cases(dataset.cases, VAL_FRACTION, settings.seed)
        train_data, test_data, _ = prepare_cases(dataset, train_cases, test_cases)
        results = {}
        if "vol25d" in methods:
            results["vol25d"] = run_vol25d(settings, train_dir, work, test_data)
            print(f"vol25d: Dice {results['vol25d']['dice_path1']:.3f} (path 1) → {results['vol25d']['dice']:.3f} "
                  f"(path 2)", flush=True)
        # A baseline gets at least the seconds vol25d took.
        budget_s = max(settings.budget_s, results["vol25d"]["train_s"] if "vol25d" in results else 0.0)
        for method in (name for name in methods if name != "vol25d"):
            model, result = train_baseline(method, settings, train_data, TrainConfig().augment, budget_s)
            _reset_memory(settings.device)
            result.update(_score(model.predict, test_data, settings.device))
            result["infer_mem"] = _peak_memory(settings.device)
            results[method] = result
            print(f"{method}: Dice {result['dice']:.3f} after {result['steps']} steps", flush=True)
            del model
        shape = tuple(test_data[0].image.shape[1:])
    sweep_rows = None
    if args.sweep:
        if settings.device.type == "cuda":
            sweep_rows = sweep(settings)
        else:  # on the CPU only at smoke sizes: it checks the code, memory is not measured
            sweep_rows = sweep(settings, SMOKE_SWEEP_SIZES) if settings.smoke else []
    text = report(settings, results, shape, sweep_rows, out_dir, args.name)
    (out_dir / f"{args.name}.md").write_text(text)
    plot(results, shape, sweep_rows, out_dir / f"{args.name}.png")
    print(text)


if __name__ == "__main__":
    sys.exit(main())

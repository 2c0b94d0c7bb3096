"""The random 2.5D U-Net against nnU-Net v2 and the harness's own 3-D, patch-wise 3-D, 2-D and stacked-2.5-D
U-Nets: the same data, split, training budget, checkpoint policy and scoring for every method (issues 7, 29).

Usage:
    python experiments/benchmark.py [--budget-s 300] [--size 48] [--n-train 16] [--n-test 4]
                                    [--generator vol25d|other|tube | --data FOLDER] [--seed 20]
                                    [--methods vol25d,nnunet-2d,...] [--lr LR] [--threads 1]
                                    [--name benchmark] [--out-dir DIR] [--keep-runs DIR] [--sweep] [--smoke]
    python experiments/benchmark.py --collect results/A.md results/B.md ... --name NAME

Methods (names as in the output):

- ``vol25d``: :func:`vol25d.train.train`, path 1 then path 2, 80 % / 20 % of the budget. Seconds become epochs
  without touching the library: one epoch of each path is timed first in a scratch run folder (not counted),
  then each path runs ``floor(share / epoch seconds)`` epochs (at least 1). Its Dice is reported after path 1
  and after path 2.
- ``vol25d-path1``: path 1 alone for the whole budget (the same timed first epoch sets its epochs): the control
  that says what path 2 is worth at equal time (issue 33).
- ``vol25d-path2aug``: ``vol25d`` with path 2 also on U's views of :data:`PATH2_COPIES` augmented copies of each
  training case (``TrainConfig.path2_copies``), the candidate for path 2's default.
- ``nnunet-2d``, ``nnunet-3d``: nnU-Net v2 (``2d`` and ``3d_fullres``) through its own planning,
  preprocessing, trainer and predictor, fitted to the budget by wall time (``experiments/nnunet_baseline.py``
  says exactly what differs from nnU-Net as it ships). Each is scored twice: with its default prediction
  (sliding window, Gaussian, mirroring) and with mirroring off (the ``(no mirroring)`` row), each timed.
- ``dynunet3d``: MONAI ``DynUNet`` (instance norm, a full-resolution first stage, strides 1, 2, 2, 2, 2) on 96³
  patches, each side at most the volume's, a third centred on foreground, inferred with MONAI's sliding window
  (overlap 0.25).
- ``unet3d``: MONAI 3-D ``UNet`` on the whole volume zero-padded to a multiple of 16 (it collapses on some
  seeds: kept for the old tables, not in the default list).
- ``unet3d-patch``: the same network on the patches of ``dynunet3d``.
- ``slice2d``: MONAI 2-D ``UNet`` on single axial slices (``D`` of the canonical ``(D, H, W)`` grid), 8 random
  slices of one augmented volume a step, their Dice taken together as over one volume.
- ``stack25d``: the 2-D ``UNet`` on 5 adjacent slices as channels (edges repeated), predicting the middle one.

One policy for every method:

- **Data.** Without ``--data``, each seed writes its own training and test phantoms with data seeds
  ``1000·seed + 1`` and ``1000·seed + 2`` (``--generator``: vol25d's, ``other_phantoms.py`` or
  ``tube_phantoms.py``), so no two seeds share a case. With ``--data``, the seed re-splits one folder.
- **Split.** :func:`vol25d.data.dataset.split_cases` holds out 20 % of the training cases for validation with
  the run's seed; every method trains on the rest (nnU-Net's fold 0 is made that split).
- **Budget.** ``--budget-s`` seconds of training wall time per method, validation included, a method's one-off
  dataset preprocessing not (vol25d's train() preprocesses inside its call, so its seconds include it;
  nnU-Net's planning and preprocessing are reported beside, as ``prep s``). The harness's baselines train
  after one warm-up step (not counted) until the budget is spent, their learning rate following vol25d's
  warm-up + cosine over the elapsed fraction; nnU-Net's epochs and poly schedule are fitted the same way.
- **Checkpoint.** Every method keeps its best validation checkpoint: vol25d and the harness's baselines by
  validation Dice (the baselines validate every :data:`VALIDATIONS`-th of their budget and at its end),
  nnU-Net by its EMA pseudo-Dice.
- **Learning rate.** The harness's baselines and vol25d use ``--lr`` (default vol25d's 3e-3) with AdamW,
  vol25d's loss (Dice + BCE) and augmentation; nnU-Net keeps its own (SGD 1e-2, poly, Dice + CE, its
  augmentation).
- **Threads.** ``--threads`` torch threads (default 1) for every method, recorded with ``nnUNet_n_proc_DA``.
- **Scoring.** Every method's segmentation is compared with the label file on the label file's own grid:
  vol25d's predictor and the harness's baselines restore their probabilities from the preprocessed grid with
  :func:`vol25d.data.preprocess.restore`, nnU-Net's predictor returns its own. HD95 is in mm at the file's
  spacing. Inference seconds are per volume, from the image file to the mask on its grid.

``--reconstruction seed`` trains vol25d with the seed method's ``R ∘ F`` and ``--no-head-image`` with a head T
that does not read the image; ``--collect`` names vol25d's row by both.

``--collect`` makes one table of reports (one per seed, or per seed and method): mean ± sd (ddof 1) per method,
the worst run, the runs that collapsed (Dice below :data:`COLLAPSED`) named, and vol25d's paired difference to
every other method with a bootstrap 95 % interval. It refuses reports of different budgets, data, commits or
thread counts.

``--time-plot`` draws Dice against training seconds per method from reports of one or more budgets (mean ± sd
over the seeds of each budget) into ``--name``'s PNG.

``--smoke`` runs everything on tiny phantoms and tiny networks on CPU in a few tens of seconds (tests); it
needs ``--out-dir`` and never writes into ``experiments/results/``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import DynUNet, UNet

from vol25d.data.augment import AugmentConfig, augment
from vol25d.data.dataset import Case, load_dataset, split_cases
from vol25d.data.phantom import write_phantom_dataset
from vol25d.data.prepare import prepare_cases, read_case_images
from vol25d.data.preprocess import preprocess_image, restore
from vol25d.infer import Predictor, probabilities_to_labels
from vol25d.io import read_volume
from vol25d.metrics import dice, evaluate_case
from vol25d.model import ModelConfig, Random25DUNet
from vol25d.device import amp_enabled, autocast, resolve_device
from vol25d.geometry import random_directions
from vol25d.train import Objective, TrainConfig, train, warmup_cosine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import machine_line  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("vol25d", "vol25d-path1", "vol25d-path2aug", "nnunet-2d", "nnunet-3d", "dynunet3d", "slice2d", "stack25d",
           "unet3d", "unet3d-patch")
# vol25d's rows: run_vol25d's arguments for each.
VOL25D = {"vol25d": {}, "vol25d-path1": {"path2": False}, "vol25d-path2aug": {"path2_copies": 4}}
PATH2_COPIES = VOL25D["vol25d-path2aug"]["path2_copies"]
WITH_PATH2 = tuple(name for name, arguments in VOL25D.items() if arguments.get("path2", True))
DEFAULT_METHODS = ("vol25d", "nnunet-2d", "nnunet-3d", "dynunet3d", "slice2d")
NNUNET = ("nnunet-2d", "nnunet-3d")
NO_MIRRORING = " (no mirroring)"
ROW_LABELS = (*METHODS, *(name + NO_MIRRORING for name in NNUNET))
GENERATORS = ("vol25d", "other", "tube")
SWEEP_SIZES = ((128, 128, 128), (256, 256, 256), (384, 384, 384), (256, 512, 512))  # (D, H, W)
SMOKE_SWEEP_SIZES = ((16, 16, 16), (16, 24, 24))  # --smoke --sweep: the same code on the CPU, memory not measured
VAL_FRACTION = 0.2
VALIDATIONS = 20  # a harness baseline validates after every 1/VALIDATIONS of its budget, and at its end
COLLAPSED = 0.1  # a run whose test Dice is below this has collapsed (an empty or near-empty mask)
BOOTSTRAP = 10_000
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
    methods: tuple[str, ...] = DEFAULT_METHODS
    reconstruction: str = ModelConfig().reconstruction
    head_image: bool = ModelConfig().head_image
    generator: str = "vol25d"
    lr: float = TrainConfig().lr
    threads: int = 1
    keep_runs: Path | None = None

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
        """The cubic patch side of ``dynunet3d`` and ``unet3d-patch`` when the volume is large enough; see
        :meth:`patch_for`."""
        return 16 if self.smoke else 96

    def patch_for(self, shape) -> tuple[int, ...]:
        """The patch for a volume of ``shape`` ``(D, H, W)``: :attr:`patch` per axis, at most the axis (rounded
        down to a multiple of the network's :attr:`multiple`, and at least that multiple)."""
        return tuple(max(self.multiple, min(self.patch, (n // self.multiple) * self.multiple)) for n in shape)

    @property
    def amp(self) -> bool:
        return amp_enabled(self.device)

    def data_seeds(self) -> tuple[int, int]:
        """The generator seeds of this run's training and test phantoms: no two runs' seeds share a case."""
        return 1000 * self.seed + 1, 1000 * self.seed + 2

    def data_line(self) -> str:
        """The report's ``- data:`` line: what was trained and tested on (``--collect`` compares it)."""
        if self.data is not None:
            return (f"- data: {Path(self.data).resolve()}, {self.n_test} test case(s) split off with seed "
                    f"{self.seed + 1}")
        train_seed, test_seed = self.data_seeds()
        return (f"- data: {self.generator} phantoms {self.size}³, {self.n_train} training (seed {train_seed}; "
                f"{VAL_FRACTION:.0%} held out for validation) + {self.n_test} test (seed {test_seed})")


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


def score(labels_of, cases: list[Case], class_names: list[str], device) -> dict:
    """Dice, HD95 (mm), clDice averaged over cases and classes, on each label file's grid, as ``vol25d
    evaluate`` scores them (:func:`vol25d.metrics.evaluate_case`), and the mean seconds per volume of
    ``labels_of(case)`` (image files → a label map ``(X, Y, Z)``, or ``(X, Y, Z, K)`` multi-label, on that
    grid)."""
    rows, seconds = [], []
    for case in cases:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            prediction = labels_of(case)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        reference = read_volume(case.label_path)
        rows += evaluate_case(prediction, reference.array, reference.spacing, class_names, case_id=case.name)
    return {"dice": float(np.mean([r["dice"] for r in rows])), "hd95": float(np.mean([r["hd95_mm"] for r in rows])),
            "cldice": float(np.mean([r["cldice"] for r in rows])), "infer_s": float(np.mean(seconds))}


def _native_labels(probabilities_of, preprocess, multi_label: bool):
    """``case → labels`` on the file's grid from ``probabilities_of(image (C, D, H, W)) → (K, D, H, W)`` on the
    preprocessed grid: read, preprocess, predict, restore, then threshold at 0.5 as ``vol25d predict`` does
    (:func:`vol25d.infer.probabilities_to_labels`)."""

    def labels_of(case: Case) -> np.ndarray:
        image, info = preprocess_image(read_case_images(case), preprocess)
        native = restore(probabilities_of(image).float(), info).array  # (X, Y, Z, K)
        return probabilities_to_labels(native, 0.5, multi_label)

    return labels_of


# --- baselines ----------------------------------------------------------------------------------------------

def _unet(settings: Settings, dims: int, in_channels: int, out_channels: int) -> UNet:
    return UNet(spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, channels=settings.channels,
                strides=settings.strides, num_res_units=2)


def _dynunet(settings: Settings, in_channels: int, out_channels: int) -> DynUNet:
    """MONAI ``DynUNet``: instance norm, a full-resolution first stage (stride 1), then stride-2 stages."""
    strides = (1, *settings.strides)
    return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels,
                   kernel_size=[3] * len(strides), strides=strides, upsample_kernel_size=strides[1:],
                   filters=settings.channels, norm_name="instance", res_block=False)


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
        if name == "dynunet3d":
            self.net = _dynunet(settings, in_channels, out_channels).to(settings.device)
        else:
            dims = 3 if name.startswith("unet3d") else 2
            channels = in_channels * (STACK if name == "stack25d" else 1)
            self.net = _unet(settings, dims, channels, out_channels).to(settings.device)

    @property
    def patches(self) -> bool:
        return self.name in ("dynunet3d", "unet3d-patch")

    def batch(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator):
        """Training input and target from an augmented ``(1, C, D, H, W)`` image and label."""
        s = self.settings
        if self.name == "unet3d":
            return _pad_to(image, s.multiple, 3), _pad_to(label, s.multiple, 3)
        if self.patches:
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
            elif self.patches:
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


def _validation_dice(model: Baseline, val_data) -> float:
    """Mean Dice over the validation cases and classes on the preprocessed grid (the checkpoint's judge)."""
    scores = []
    with torch.no_grad():
        for case in val_data:
            prediction = (model.predict(case.image) >= 0.5).cpu().numpy()
            reference = case.label.numpy() > 0
            scores += [dice(prediction[k], reference[k]) for k in range(reference.shape[0])]
    model.net.train()
    return float(np.mean(scores)) if scores else float("nan")


def train_baseline(name: str, settings: Settings, train_data, augment_config: AugmentConfig,
                   budget_s: float | None = None, val_data=None) -> tuple[Baseline, dict]:
    """Train baseline ``name`` for ``budget_s`` seconds of wall time (default ``settings.budget_s``), validating
    on ``val_data`` after every 1/:data:`VALIDATIONS` of the budget and at its end, and keeping the weights of
    the best validation Dice (without ``val_data``: the last weights). Validation counts in the budget."""
    budget_s = settings.budget_s if budget_s is None else budget_s
    torch.manual_seed(settings.seed)
    k, c = train_data[0].label.shape[0], train_data[0].image.shape[0]
    model = Baseline(name, settings, c, k)
    config = TrainConfig(path=2, device=str(settings.device), lr=settings.lr)  # path 2: Dice + BCE, no views' term
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
    # the learning rate following vol25d's warm-up + cosine over the elapsed fraction of the budget.
    model.net.train()
    step(0)
    model.net.zero_grad(set_to_none=True)
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    _reset_memory(device)
    _sync(device)
    start = time.perf_counter()
    steps, last_s, validations = 0, 0.0, 0
    best = (-math.inf, None, 0.0)  # (validation Dice, weights, seconds)
    order: list[int] = []

    def validate(elapsed: float):
        nonlocal best, validations
        if not val_data:
            return
        validations += 1
        value = _validation_dice(model, val_data)
        if value > best[0] or best[1] is None:
            best = (value, {key: v.detach().clone() for key, v in model.net.state_dict().items()}, elapsed)

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
        now = time.perf_counter() - start
        last_s = now - elapsed
        if math.floor(now / budget_s * VALIDATIONS) > math.floor(elapsed / budget_s * VALIDATIONS):
            validate(now)
            last_s = time.perf_counter() - start - elapsed  # the step's share of time includes its validation
    validate(time.perf_counter() - start)
    train_s = time.perf_counter() - start
    if best[1] is not None:
        model.net.load_state_dict(best[1])
    return model, {"steps": steps, "train_s": train_s, "last_step_s": last_s, "train_mem": _peak_memory(device),
                   "best_s": best[2] if best[1] is not None else train_s, "validations": validations,
                   "best_val": best[0] if best[1] is not None else float("nan")}


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


def run_vol25d(settings: Settings, train_dir: Path, work: Path, test_cases, class_names, multi_label,
               path2: bool = True, path2_copies: int = 0, name: str = "vol25d") -> dict:
    """vol25d trained for the budget, 80 % path 1 and 20 % path 2 (``path2``, on ``path2_copies`` augmented
    copies of each case too), or path 1 alone for all of it; scored after each path. With
    ``settings.keep_runs`` its run folder (checkpoints, metrics, config) is kept as ``s{seed}_{name}`` there."""
    model_config = _model_config(settings)
    base = dict(steps_per_case=2 if settings.smoke else 12, val_fraction=VAL_FRACTION, device=str(settings.device),
                seed=settings.seed, lr=settings.lr)
    n_train = len(split_cases(load_dataset(train_dir).cases, VAL_FRACTION, settings.seed)[0])
    # Seconds → epochs: one timed epoch of each path in a scratch folder.
    # The epoch's seconds come from pathN_metrics.csv (training and validation, without the data loading).
    probe = train(train_dir, work / "probe", TrainConfig(path=1, epochs=1, **base), model_config=model_config,
                  quiet=True)
    share1 = 0.8 if path2 else 1.0
    epochs1 = max(1, int(share1 * settings.budget_s / _epoch_seconds(work / "probe" / "path1_metrics.csv")))
    epochs2 = 0
    if path2:
        train(train_dir, work / "probe", TrainConfig(path=2, epochs=1, path2_copies=path2_copies, **base),
              init=probe.checkpoint, quiet=True)
        epochs2 = max(1, int(0.2 * settings.budget_s / _epoch_seconds(work / "probe" / "path2_metrics.csv")))
    run = work / f"vol25d-{path2}-{path2_copies}"
    _reset_memory(settings.device)
    first = train(train_dir, run, TrainConfig(path=1, epochs=epochs1, **base), model_config=model_config, quiet=True)
    second = (train(train_dir, run, TrainConfig(path=2, epochs=epochs2, path2_copies=path2_copies, **base),
                    init=first.checkpoint, quiet=True) if path2 else None)
    train_mem = _peak_memory(settings.device)
    if settings.keep_runs is not None:
        shutil.copytree(run, settings.keep_runs / f"s{settings.seed}_{name}", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("tb", "*_last.pt"))
    scores = {}
    checkpoints = [("path1", first.checkpoint)] + ([("path2", second.checkpoint)] if path2 else [])
    for tag, checkpoint in checkpoints:
        predictor = Predictor.load(checkpoint, str(settings.device))
        _reset_memory(settings.device)
        labels_of = _native_labels(lambda image, model=predictor.model: _vol25d_probabilities(model, image, settings),
                                   predictor.preprocess, multi_label)
        scores[tag] = score(labels_of, test_cases, class_names, settings.device)
        scores[tag]["infer_mem"] = _peak_memory(settings.device)
    steps = (epochs1 + epochs2) * n_train * base["steps_per_case"]
    best = f"path 1 epoch {first.best_epoch}" + (f", path 2 epoch {second.best_epoch}" if path2 else "")
    return dict(scores[checkpoints[-1][0]], steps=steps, train_s=first.seconds + (second.seconds if path2 else 0.0),
                train_mem=train_mem, dice_path1=scores["path1"]["dice"], epochs=(epochs1, epochs2), best=best)


def _vol25d_probabilities(model, image: torch.Tensor, settings: Settings) -> torch.Tensor:
    with autocast(settings.device, settings.amp):
        return model(image[None].to(settings.device))[0].float()


# --- nnU-Net ------------------------------------------------------------------------------------------------

def run_nnunet(methods: tuple[str, ...], settings: Settings, dataset, train_cases, val_cases, test_cases,
               work: Path) -> dict:
    """nnU-Net's rows: plan and preprocess once, then train each configuration for the budget and score its
    default prediction (mirroring) and the one without mirroring."""
    import nnunet_baseline as nnunet

    nnunet.check_installed()
    folders = nnunet.use_folders(work / "nnunet")
    nnunet.write_raw_dataset(dataset, train_cases + val_cases, folders["nnUNet_raw"])
    nnunet.write_split(folders["nnUNet_preprocessed"], train_cases, val_cases)
    configurations = tuple(nnunet.CONFIGURATIONS[name] for name in methods)
    prep_s = nnunet.plan_and_preprocess(configurations)
    nnunet.check_axes(test_cases[0].label_path)
    torch.set_num_threads(settings.threads)  # nnU-Net's planner resets torch's threads
    results = {}
    for name in methods:
        trained = nnunet.train(nnunet.CONFIGURATIONS[name], settings.budget_s, settings.seed)
        torch.set_num_threads(settings.threads)
        common = dict(steps=trained.iterations, train_s=trained.train_s, train_mem=None, infer_mem=None,
                      prep_s=prep_s, best=f"epoch {trained.best_epoch} of {trained.epochs}",
                      nnunet=f"batch {trained.batch_size}, patch {'×'.join(map(str, trained.patch_size))}")
        for mirroring, label in ((True, name), (False, name + NO_MIRRORING)):
            predictor = nnunet.Predictor(trained, mirroring)
            results[label] = dict(score(predictor.labels, test_cases, dataset.class_names, settings.device), **common)
        print(f"{name}: Dice {results[name]['dice']:.3f} after {trained.epochs} epochs", flush=True)
    return results


# --- data ---------------------------------------------------------------------------------------------------

def _write_phantoms(generator: str, folder: Path, n: int, size: int, seed: int) -> Path:
    if generator == "vol25d":
        return write_phantom_dataset(folder, n, size, seed=seed)
    if generator == "other":
        from other_phantoms import write_other_dataset

        return write_other_dataset(folder, n, size, seed)
    from tube_phantoms import write_tube_dataset

    return write_tube_dataset(folder, n, size, seed)


def make_data(settings: Settings, work: Path) -> tuple[Path, list, list]:
    """The training folder every method trains on (split inside with the run's seed), its cases, and the test
    cases (for scoring)."""
    if settings.data is None:
        train_seed, test_seed = settings.data_seeds()
        train_dir = _write_phantoms(settings.generator, work / "train", settings.n_train, settings.size, train_seed)
        test_dir = _write_phantoms(settings.generator, work / "test", settings.n_test, settings.size, test_seed)
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

def _swept(methods: tuple[str, ...]) -> list[str]:
    """The methods a sweep steps: not nnU-Net's (its own trainer), and vol25d's network once (its variants
    train the same network)."""
    return [m for m in methods if m not in (*NNUNET, *VOL25D) or m == "vol25d"]


def sweep(settings: Settings, sizes=SWEEP_SIZES) -> list[dict]:
    """One training step of each method on a random whole volume of each size; peak memory or OOM."""
    rows = []
    device = settings.device
    config = TrainConfig(path=1, device=str(device))
    for shape in sizes:
        for name in _swept(settings.methods):
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
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def report(settings: Settings, results: dict, shape, sweep_rows, out_dir: Path, name: str) -> str:
    lines = [f"# Benchmark: {name}", "",
             "Same split, training budget, checkpoint policy (best validation) and scoring (against the label files "
             "on their own grid, HD95 in mm at their spacing) for every method; see experiments/benchmark.py.", "",
             "| method | Dice | HD95 (mm) | clDice | steps | train s | s/step | best checkpoint | inference s/volume "
             "| train memory | inference memory |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in (label for label in ROW_LABELS if label in results):
        r = results[label]
        per_step = r["train_s"] / r["steps"] if r["steps"] else float("nan")
        lines.append(f"| {label} | {_fmt(r['dice'])} | {_fmt(r['hd95'], 2)} | {_fmt(r['cldice'])} | {r['steps']} | "
                     f"{r['train_s']:.1f} | {_fmt(per_step, 3)} | {r.get('best', 'last')} | {r['infer_s']:.3f} | "
                     f"{_gib(r['train_mem'])} | {_gib(r['infer_mem'])} |")
    for label in (label for label in WITH_PATH2 if label in results):
        v = results[label]
        lines += ["", f"{label} path-2 gain: Dice {_fmt(v['dice_path1'])} after path 1 → {_fmt(v['dice'])} after path 2 "
                  f"({v['dice'] - v['dice_path1']:+.3f}); epochs {v['epochs'][0]} (path 1) + {v['epochs'][1]} (path 2). "
                  f"The table's {label} row is after path 2; its train seconds include `train`'s own data loading and "
                  "validation, its steps are path 1's plus path 2's."]
    nnunet_rows = [label for label in NNUNET if label in results]
    if nnunet_rows:
        lines += ["", "nnU-Net: " + "; ".join(f"{label} {results[label]['nnunet']}" for label in nnunet_rows)
                  + f"; planning and preprocessing {results[nnunet_rows[0]]['prep_s']:.1f} s (not in the budget); "
                  "steps are iterations (one batch each), the best checkpoint by its EMA pseudo-Dice."]
    lines += ["", "## Machine", "", machine(), "", "## Settings", "",
              f"- methods: {', '.join(settings.methods)}; vol25d's reconstruction: {settings.reconstruction}; "
              f"T reads the image: {'yes' if settings.head_image else 'no'}",
              f"- budget {settings.budget_s:g} s of training per method (wall time, validation included; vol25d: "
              "80 % path 1, 20 % path 2, seconds → epochs from a timed first epoch, not counted; the harness's "
              "baselines: after a warm-up step; nnU-Net: epochs while the budget lasts)",
              settings.data_line(),
              f"- seed: {settings.seed}",
              f"- threads: {settings.threads} torch thread(s) per method; nnUNet_n_proc_DA="
              f"{os.environ.get('nnUNet_n_proc_DA', 'unset')}",
              f"- learning rate (vol25d and the harness's baselines): {settings.lr:g}",
              f"- preprocessed test volume (D, H, W): {tuple(shape)}",
              f"- device {settings.device}; baselines: MONAI UNet / DynUNet channels {settings.channels}, strides "
              f"{settings.strides}; patch {settings.patch}³ at most the volume "
              f"({'×'.join(map(str, settings.patch_for(shape)))} here); {SLICES_PER_STEP} slices per 2-D step; "
              f"stack of {STACK}; validation every 1/{VALIDATIONS} of the budget",
              f"- smoke: {settings.smoke}", "", "## Sweep: one training step on a whole volume", ""]
    if sweep_rows is None:
        lines.append("not requested (--sweep)")
    elif not sweep_rows:
        lines.append("not run on CPU")
    else:
        sizes = list(dict.fromkeys(row["shape"] for row in sweep_rows))
        lines += ["| method | " + " | ".join("×".join(map(str, s)) for s in sizes) + " | largest that fits |",
                  "|---|" + "---|" * (len(sizes) + 1)]
        for method in _swept(settings.methods):
            cells = [row["memory"] if row["memory"] == "OOM" else _gib(row["memory"])
                     for row in sweep_rows if row["method"] == method]
            fits = [row["shape"] for row in sweep_rows if row["method"] == method and row["memory"] != "OOM"]
            largest = "×".join(map(str, max(fits, key=np.prod))) if fits else "none"
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {largest} |")
        lines += ["", "Peak GPU memory of one training step (forward, loss, backward) on a random whole volume; sizes "
                  "are (D, H, W), D axial. The patch methods train on one patch whatever the volume, and slice2d and "
                  f"stack25d on {SLICES_PER_STEP} slices of it, so their figures are a step's."]
    return "\n".join(lines) + "\n"


# --- collect ------------------------------------------------------------------------------------------------

_COMMIT = re.compile(r"at commit ([^;]+);")


def _same_settings(text: str) -> dict[str, str]:
    """What every report of one table must share: budget, data (less its seeds), commit, threads."""
    lines = text.splitlines()
    data = next((line for line in lines if line.startswith("- data:")), "")
    commit = _COMMIT.search(text)
    return {"budget": next((line for line in lines if line.startswith("- budget")), ""),
            "data": re.sub(r"\(seed \d+[;)]|seed \d+", "seed …", data),
            "commit": commit.group(1).strip() if commit else "unknown",
            "threads": next((line for line in lines if line.startswith("- threads:")), "")}


def bootstrap_interval(differences, n: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of paired ``differences`` (resampling the runs)."""
    values = np.asarray(differences, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    means = values[np.random.default_rng(seed).integers(0, len(values), (n, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def collect(paths: list[Path], out_dir: Path, name: str) -> str:
    """One table of earlier reports (one per seed, or per seed and method): per method the runs, mean ± sd
    (ddof 1), the worst run, the collapsed runs (test Dice below :data:`COLLAPSED`, named by seed and counted in
    the mean), HD95 and clDice; then vol25d's paired difference to every other method over their common seeds,
    with a bootstrap 95 % interval. vol25d's row is named by its reconstruction and head. Reports of another
    budget, data, commit or thread count than the first raise ``ValueError`` naming both files, and so does a
    method given twice for one seed."""
    runs: dict[str, dict[str, list[float]]] = {}
    first: tuple[dict, Path] | None = None
    for path in paths:
        text = path.read_text()
        same = _same_settings(text)
        if first is None:
            first = (same, path)
        for key in same:
            if same[key] != first[0][key]:
                raise ValueError(f"{path} differs from {first[1]} in its {key} ({same[key]!r} against "
                                 f"{first[0][key]!r}); one table takes one {key}")
        seed_line = re.search(r"^- seed: (\S+)", text, re.M)
        seed = seed_line.group(1) if seed_line else path.stem
        reconstruction = (text.split("vol25d's reconstruction: ", 1)[1].split()[0].rstrip(";")
                          if "vol25d's reconstruction: " in text else "seed")
        if "T reads the image: yes" in text:
            reconstruction += ", T reads the image"
        for line in text.split("## Machine", 1)[0].splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells[0] in ROW_LABELS:
                label = f"vol25d ({reconstruction})" if cells[0] == "vol25d" else cells[0]
                if seed in runs.setdefault(label, {}):
                    raise ValueError(f"{path}: {label} for seed {seed} is given twice")
                runs[label][seed] = [float(cells[1]), float(cells[2]), float(cells[3])]
    settings = first[0] if first else {}
    lines = [f"# Benchmark over runs ({name})", "",
             f"Collected from {', '.join(f'[{p.name}]({p.name})' for p in paths)} (settings and machine in each); "
             f"one run per seed and method, all at commit {settings.get('commit', 'unknown')}. Mean ± sample "
             f"standard deviation (ddof 1) over the runs; a run whose test Dice is below {COLLAPSED} collapsed and "
             "is named (it counts in the mean).", "",
             "| method | runs | Dice | worst run's Dice | collapsed runs | HD95 (mm) | clDice |",
             "|---|---|---|---|---|---|---|"]

    def mean_dice(label):
        return float(np.mean([v[0] for v in runs[label].values()]))

    for label in sorted(runs, key=lambda item: -mean_dice(item)):
        table = np.array(list(runs[label].values()))
        cells = [f"{table[:, i].mean():.3f} ± {_fmt(_sd(table[:, i]))}" for i in range(3)]
        collapsed = [seed for seed, values in runs[label].items() if values[0] < COLLAPSED]
        lines.append(f"| {label} | {len(table)} | {cells[0]} | {table[:, 0].min():.3f} | "
                     f"{', '.join(f'seed {s}' for s in collapsed) or 'none'} | {cells[1]} | {cells[2]} |")
    ours = [label for label in runs if label.startswith("vol25d (")]
    if ours:
        lines += ["", f"Paired differences of Dice over the seeds both ran (mean, bootstrap 95 % interval of {BOOTSTRAP} "
                  "resamples of the seeds):", "",
                  "| difference | seeds | mean | 95 % interval | wins |", "|---|---|---|---|---|"]
        for mine in ours:
            for other in sorted((label for label in runs if label not in ours), key=lambda item: -mean_dice(item)):
                seeds = [seed for seed in runs[mine] if seed in runs[other]]
                if not seeds:
                    continue
                differences = [runs[mine][seed][0] - runs[other][seed][0] for seed in seeds]
                low, high = bootstrap_interval(differences)
                wins = sum(d > 0 for d in differences)
                lines.append(f"| {mine} − {other} | {len(seeds)} | {np.mean(differences):+.3f} | "
                             f"({_fmt(low)}, {_fmt(high)}) | {wins}/{len(seeds)} |")
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(text)
    print(text)
    return text


def time_to_accuracy(paths: list[Path], png: Path) -> dict[str, list[tuple[float, float, float, int]]]:
    """Test Dice against training seconds per method from reports of one or more budgets (one per seed and
    budget): per method and budget the mean seconds, mean Dice and its sd (ddof 1) over the runs, drawn as a
    line per method into ``png``; returns ``{label: [(seconds, dice, sd, runs), …]}`` by budget. Reports of other
    data, commits or threads than the first raise ``ValueError``, as in :func:`collect`."""
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    first = None
    for path in paths:
        text = path.read_text()
        same = _same_settings(text)
        first = first or (same, path)
        for key in ("data", "commit", "threads"):
            if same[key] != first[0][key]:
                raise ValueError(f"{path} differs from {first[1]} in its {key}; one plot takes one {key}")
        for line in text.split("## Machine", 1)[0].splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("|") and cells[0] in ROW_LABELS:
                points.setdefault(cells[0], {}).setdefault(same["budget"], []).append((float(cells[5]),
                                                                                      float(cells[1])))
    curves = {label: sorted((float(np.mean([s for s, _ in runs])), float(np.mean([d for _, d in runs])),
                             _sd([d for _, d in runs]), len(runs)) for runs in budgets.values())
              for label, budgets in points.items()}
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for label, curve in sorted(curves.items()):
        seconds, dices, sds, _ = zip(*curve)
        axes.errorbar(seconds, dices, yerr=[0 if math.isnan(v) else v for v in sds], marker="o", capsize=3,
                      label=label)
    axes.set(xlabel="training seconds (mean over runs)", ylabel="test Dice (mean ± sd over seeds)",
             title="Dice against training time")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    return curves


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
    parser.add_argument("--budget-s", type=float, default=300.0, help="training seconds per method (default 300)")
    parser.add_argument("--size", type=int, default=48, help="phantom side in voxels (default 48)")
    parser.add_argument("--n-train", type=int, default=16, help="training phantoms, validation included (default 16)")
    parser.add_argument("--n-test", type=int, default=4, help="test phantoms or cases (default 4)")
    parser.add_argument("--generator", choices=GENERATORS, default="vol25d",
                        help="phantoms: vol25d's, experiments/other_phantoms.py or tube_phantoms.py (default vol25d)")
    parser.add_argument("--data", type=Path, help="a dataset folder (nnU-Net/MSD layout) instead of phantoms")
    parser.add_argument("--name", default="benchmark")
    parser.add_argument("--out-dir", type=Path, help=f"where the Markdown and PNG go (default {RESULTS})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--keep-runs", type=Path, metavar="DIR", help="keep each vol25d run folder there as "
                        "sSEED_METHOD (experiments/path2_changes.py reads them)")
    parser.add_argument("--sweep", action="store_true", help="largest whole volume per method (GPU; with --smoke "
                        "tiny sizes on the CPU)")
    parser.add_argument("--smoke", action="store_true", help="tiny run on CPU; needs --out-dir")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated subset of {','.join(METHODS)} (default {','.join(DEFAULT_METHODS)})")
    parser.add_argument("--reconstruction", choices=("seed", "image"), default=ModelConfig().reconstruction,
                        help=f"vol25d's ModelConfig.reconstruction (default {ModelConfig().reconstruction})")
    parser.add_argument("--head-image", action=argparse.BooleanOptionalAction, default=ModelConfig().head_image,
                        help="vol25d's ModelConfig.head_image: T reads the image (default on)")
    parser.add_argument("--lr", type=float, default=TrainConfig().lr,
                        help=f"learning rate of vol25d and the harness's baselines (default {TrainConfig().lr:g}; "
                        "nnU-Net keeps its own)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every method (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, split, weights and draws (default 0)")
    parser.add_argument("--collect", type=Path, nargs="+", metavar="REPORT",
                        help="summarise earlier reports (one per seed) into --name: mean ± sd per method")
    parser.add_argument("--time-plot", type=Path, nargs="+", metavar="REPORT",
                        help="draw Dice against training seconds per method from reports of one or more budgets "
                        "into --out-dir/--name.png")
    args = parser.parse_args(argv)
    if args.collect or args.time_plot:
        out_dir = args.out_dir or RESULTS
        try:
            if args.collect:
                collect(args.collect, out_dir, args.name)
            else:
                out_dir.mkdir(parents=True, exist_ok=True)
                for label, curve in time_to_accuracy(args.time_plot, out_dir / f"{args.name}.png").items():
                    print(label, " ".join(f"{s:.0f} s: {d:.3f}" for s, d, _, _ in curve))
        except (OSError, ValueError) as error:
            parser.error(str(error))
        return
    try:
        methods = parse_methods(args.methods)
    except ValueError as error:
        parser.error(str(error))
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: give 1 or more")
    if any(name in NNUNET for name in methods):
        import nnunet_baseline

        try:
            nnunet_baseline.check_installed()
        except RuntimeError as error:
            parser.error(str(error))
    if args.smoke:
        if args.out_dir is None:
            parser.error("--smoke writes into a temporary folder: pass --out-dir")
        args.size, args.n_train, args.n_test, args.budget_s, args.device = 24, 5, 2, 2.0, "cpu"
    torch.set_num_threads(args.threads)
    out_dir = args.out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.budget_s, args.size, args.n_train, args.n_test, args.data, resolve_device(args.device),
                        args.smoke, seed=args.seed, methods=methods, reconstruction=args.reconstruction,
                        head_image=args.head_image, generator=args.generator, lr=args.lr, threads=args.threads,
                        keep_runs=args.keep_runs)
    with tempfile.TemporaryDirectory(prefix="vol25d-benchmark-") as scratch:
        work = Path(scratch)
        train_dir, _, test_cases = make_data(settings, work)
        dataset = load_dataset(train_dir)
        class_names, multi_label = dataset.class_names, dataset.multi_label
        train_cases, val_cases = split_cases(dataset.cases, VAL_FRACTION, settings.seed)
        train_data, val_data, preprocess = prepare_cases(dataset, train_cases, val_cases, quiet=True)
        shape = tuple(train_data[0].image.shape[1:])
        results = {}
        for method in (name for name in methods if name in VOL25D):
            results[method] = run_vol25d(settings, train_dir, work, test_cases, class_names, multi_label,
                                         name=method, **VOL25D[method])
            print(f"{method}: Dice {results[method]['dice_path1']:.3f} (path 1) → {results[method]['dice']:.3f} "
                  "(the row)", flush=True)
        for method in (name for name in methods if name not in (*VOL25D, *NNUNET)):
            model, result = train_baseline(method, settings, train_data, TrainConfig().augment, val_data=val_data)
            _reset_memory(settings.device)
            result.update(score(_native_labels(model.predict, preprocess, multi_label), test_cases, class_names,
                                settings.device))
            result["infer_mem"] = _peak_memory(settings.device)
            result["best"] = f"{result['best_s']:.0f} s"
            results[method] = result
            print(f"{method}: Dice {result['dice']:.3f} after {result['steps']} steps", flush=True)
            del model
        chosen = tuple(name for name in methods if name in NNUNET)
        if chosen:
            results.update(run_nnunet(chosen, settings, dataset, train_cases, val_cases, test_cases, work))
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

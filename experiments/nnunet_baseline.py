"""nnU-Net v2 as a baseline of the benchmark harness (``experiments/benchmark.py``, methods ``nnunet-2d`` and
``nnunet-3d``): nnU-Net's own planning, preprocessing, network, loss, augmentation, trainer and predictor, on the
harness's split and budget.

What the harness changes of nnU-Net, and nothing else:

- **Data.** The harness's training cases are linked into an nnU-Net raw dataset (``DatasetNNN_vol25dBench``,
  files named ``CASE_0000.nii.gz`` …), and ``splits_final.json`` makes fold 0 the harness's own split: nnU-Net
  trains on the cases the other methods train on and validates on the cases they validate on.
- **Budget.** :func:`budget_trainer` subclasses ``nnUNetTrainer`` so that training stops by wall time: an epoch
  starts while the seconds spent plus half a mean epoch are under the budget, and the learning rate is
  nnU-Net's poly schedule (``lr₀ (1 − t)^0.9``) over the elapsed fraction ``t`` of the budget instead of over
  1000 epochs. An epoch is :data:`ITERATIONS` training iterations and :data:`VAL_ITERATIONS` validation
  iterations (nnU-Net ships 250 and 50, the same 5 : 1), so that a budget of minutes on a CPU holds several
  epochs, hence several checks of the best checkpoint. The seconds run from ``run_training``'s start
  (nnU-Net's data loaders and unpacking included) to its end.
- **Checkpoint.** nnU-Net's own policy: the weights of the epoch with the best EMA pseudo-Dice on the
  validation cases (``checkpoint_best.pth``). They are kept in memory instead of written, so no pickle is
  ever loaded back.
- **Prediction.** ``nnUNetPredictor`` as it ships (sliding window, step 0.5, Gaussian weighting), with
  mirroring (its default) or without, on the image files; the segmentation comes back on the file's grid.

nnU-Net reads its folders from environment variables when it is first imported, so :func:`use_folders` must
run before any other function here, once per process. ``nnunetv2`` is a benchmark-only dependency: the
``bench`` extra of ``pyproject.toml`` pins it (:data:`NNUNET_VERSION`).
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vol25d.data.dataset import Case, DatasetInfo

NNUNET_VERSION = "2.8.1"
CONFIGURATIONS = {"nnunet-2d": "2d", "nnunet-3d": "3d_fullres"}
DATASET_ID = 990
DATASET_NAME = f"Dataset{DATASET_ID:03d}_vol25dBench"
ITERATIONS = 50
VAL_ITERATIONS = 10
POLY_EXPONENT = 0.9
ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")


def check_installed() -> None:
    """Raise ``RuntimeError`` in one sentence when nnunetv2 is missing or is not version :data:`NNUNET_VERSION`."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("nnunetv2")
    except PackageNotFoundError:
        found = None
    if found != NNUNET_VERSION:
        raise RuntimeError(f"the nnunet-* methods need nnunetv2=={NNUNET_VERSION} (found {found or 'none'}): "
                           "pip install torch==2.14.1 torchvision==0.29.1, then pip install -e '.[bench]'")


def use_folders(root: Path) -> dict[str, Path]:
    """Point nnU-Net's ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` at folders under ``root``
    (created). Must come before nnunetv2 is first imported in this process: it reads them once."""
    folders = {name: Path(root) / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    return folders


def raw_dataset_json(dataset: DatasetInfo, n_training: int) -> dict:
    """nnU-Net v2's ``dataset.json`` for the harness's copy of ``dataset``; ``ValueError`` for a dataset nnU-Net's
    default (one label value per voxel) cannot train on."""
    if dataset.multi_label:
        raise ValueError(f"{dataset.root}: the nnunet-* methods need one label value per voxel; this dataset's "
                         "labels overlap (multi-label), which needs nnU-Net's region-based training, not run here")
    values = sorted(dataset.labels.values())
    if values != list(range(len(values))):
        raise ValueError(f"{dataset.root}: nnU-Net needs label values 0, 1, 2 … without gaps; dataset.json has "
                         f"{values}")
    if dataset.file_ending not in ENDINGS:
        raise ValueError(f"{dataset.root}: nnU-Net's default readers take {', '.join(ENDINGS)} files, not "
                         f"{dataset.file_ending!r}")
    return {"channel_names": {str(i): name for i, name in enumerate(dataset.channel_names)},
            "labels": dict(dataset.labels), "numTraining": n_training, "file_ending": dataset.file_ending}


def write_raw_dataset(dataset: DatasetInfo, cases: list[Case], raw_root: Path) -> Path:
    """Link ``cases`` (images and labels) into ``raw_root/DATASET_NAME`` in nnU-Net v2's layout; its folder."""
    folder = Path(raw_root) / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    ending = dataset.file_ending
    meta = raw_dataset_json(dataset, len(cases))
    for case in cases:
        if len(case.image_paths) != len(dataset.channel_names):
            raise ValueError(f"{case.name}: {len(case.image_paths)} image file(s) for {len(dataset.channel_names)} "
                             "channels; nnU-Net needs one file per channel (CASE_0000, CASE_0001 …)")
        for channel, path in enumerate(case.image_paths):
            (folder / "imagesTr" / f"{case.name}_{channel:04d}{ending}").symlink_to(Path(path).resolve())
        (folder / "labelsTr" / f"{case.name}{ending}").symlink_to(Path(case.label_path).resolve())
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return folder


def write_split(preprocessed_root: Path, train: list[Case], val: list[Case]) -> Path:
    """``splits_final.json`` whose fold 0 is the harness's split."""
    folder = Path(preprocessed_root) / DATASET_NAME
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "splits_final.json"
    path.write_text(json.dumps([{"train": sorted(c.name for c in train), "val": sorted(c.name for c in val)}]))
    return path


def plan_and_preprocess(configurations: tuple[str, ...]) -> float:
    """nnU-Net's fingerprint, plans and preprocessing of the raw dataset (one process); the seconds it took."""
    start = time.perf_counter()
    # The planner sets torch's threads to nnUNet_n_proc_DA, which fails at 0 (augmentation in the main process,
    # what the harness uses on one core); planning does not augment, so it runs with 1.
    workers = os.environ.get("nnUNet_n_proc_DA")
    if workers is not None and workers.strip() == "0":
        os.environ["nnUNet_n_proc_DA"] = "1"
    try:
        _plan_and_preprocess(configurations)
    finally:
        if workers is not None:
            os.environ["nnUNet_n_proc_DA"] = workers
    return time.perf_counter() - start


def _plan_and_preprocess(configurations: tuple[str, ...]) -> None:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    extract_fingerprints([DATASET_ID], num_processes=1, check_dataset_integrity=True, verbose=False,
                         show_progress_bar=False)
    plan_experiments([DATASET_ID])
    preprocess([DATASET_ID], configurations=configurations, num_processes=[1] * len(configurations),
               show_progress_bar=False)


class ElapsedPoly:
    """nnU-Net's poly learning rate over the elapsed fraction of a wall-clock budget: ``step`` (called by the
    trainer at each epoch's start, its argument ignored) sets ``lr₀ (1 − t)^0.9``, ``t`` the fraction spent."""

    def __init__(self, optimizer, initial_lr: float, budget_s: float, start: float, clock=time.perf_counter):
        self.optimizer, self.initial_lr, self.budget_s, self.start, self.clock = (optimizer, initial_lr, budget_s,
                                                                                  start, clock)
        self._last_lr = [initial_lr]

    def step(self, _epoch=None) -> None:
        fraction = min(1.0, max(0.0, (self.clock() - self.start) / self.budget_s))
        lr = self.initial_lr * (1.0 - fraction) ** POLY_EXPONENT
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last_lr = [lr]

    def get_last_lr(self) -> list[float]:
        return self._last_lr


def another_epoch(elapsed_s: float, epoch_seconds: list[float], budget_s: float) -> bool:
    """Whether an epoch starts: always the first; then while ``elapsed + ½ mean epoch < budget`` (the harness's
    rule for every method, so the budget is met on average rather than always overrun or underrun)."""
    if not epoch_seconds:
        return True
    return elapsed_s + 0.5 * float(np.mean(epoch_seconds)) < budget_s


def budget_trainer(budget_s: float):
    """``nnUNetTrainer`` trained for ``budget_s`` seconds of wall time (see the module's docstring); after
    ``run_training``: ``best_weights``, ``best_epoch``, ``epochs_done``, ``iterations_done``, ``train_s``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerBudget(nnUNetTrainer):
        # nnU-Net records its constructor's arguments by name, so the signature is spelled out as nnU-Net's.
        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cpu")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_iterations_per_epoch = ITERATIONS
            self.num_val_iterations_per_epoch = VAL_ITERATIONS
            self.budget_s = budget_s
            self.best_weights, self.best_epoch = None, None
            self.epochs_done = self.iterations_done = 0
            self.train_s = 0.0

        def save_checkpoint(self, filename: str) -> None:
            # nnU-Net calls this with checkpoint_best.pth when the EMA pseudo-Dice improves; only that one is kept.
            if os.path.basename(filename) == "checkpoint_best.pth":
                self.best_weights = copy.deepcopy(self.network.state_dict())
                self.best_epoch = self.current_epoch

        def run_training(self):
            start = time.perf_counter()
            self.on_train_start()
            self.lr_scheduler = ElapsedPoly(self.optimizer, self.initial_lr, self.budget_s, start)
            seconds: list[float] = []
            while another_epoch(time.perf_counter() - start, seconds, self.budget_s):
                epoch_start = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = [self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)]
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val)
                self.on_epoch_end()
                self.epochs_done += 1
                self.iterations_done += self.num_iterations_per_epoch
                seconds.append(time.perf_counter() - epoch_start)
            self.num_epochs = self.current_epoch
            self.on_train_end()
            self.train_s = time.perf_counter() - start

    return nnUNetTrainerBudget


@dataclass
class TrainedNnUNet:
    """A trained nnU-Net configuration and what its training recorded."""

    trainer: object
    configuration: str
    epochs: int
    iterations: int
    train_s: float
    best_epoch: int | None
    batch_size: int
    patch_size: tuple[int, ...]


def train(configuration: str, budget_s: float, seed: int) -> TrainedNnUNet:
    """Train nnU-Net ``configuration`` (``"2d"`` or ``"3d_fullres"``) on fold 0 for ``budget_s`` seconds on the
    CPU, seeded (torch, NumPy and ``random``)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    folder = Path(nnUNet_preprocessed) / DATASET_NAME
    plans = load_json(str(folder / "nnUNetPlans.json"))
    plans["continue_training"] = False  # what nnU-Net's run_training sets before it builds a trainer
    dataset_json = load_json(str(folder / "dataset.json"))
    trainer = budget_trainer(budget_s)(plans=plans, configuration=configuration, fold=0, dataset_json=dataset_json,
                                       device=torch.device("cpu"))
    trainer.run_training()
    if trainer.best_weights is None:
        raise RuntimeError(f"nnU-Net {configuration} finished without a best checkpoint")
    return TrainedNnUNet(trainer, configuration, trainer.epochs_done, trainer.iterations_done, trainer.train_s,
                         trainer.best_epoch, int(trainer.configuration_manager.batch_size),
                         tuple(int(n) for n in trainer.configuration_manager.patch_size))


class Predictor:
    """nnU-Net's own predictor on a trained configuration's best weights: image files → its label map
    ``(X, Y, Z)`` on the image file's grid (the voxel order of :func:`vol25d.io.read_volume`)."""

    def __init__(self, trained: TrainedNnUNet, mirroring: bool):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        trainer = trained.trainer
        network = copy.deepcopy(trainer.network)
        network.load_state_dict(trainer.best_weights)
        # The best weights were saved with deep supervision on; inference takes the full-resolution output only.
        decoder = getattr(network, "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = False
        network.eval()
        self.predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                         perform_everything_on_device=False, device=torch.device("cpu"),
                                         allow_tqdm=False)
        self.predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                             [network.state_dict()], trainer.dataset_json, type(trainer).__name__,
                                             trainer.inference_allowed_mirroring_axes)
        self.reader = trainer.plans_manager.image_reader_writer_class()

    def labels(self, case: Case) -> np.ndarray:
        image, properties = self.reader.read_images([str(p) for p in case.image_paths])
        return file_order(np.asarray(self.predictor.predict_single_npy_array(image, properties)))


def file_order(array: np.ndarray) -> np.ndarray:
    """nnU-Net's SimpleITK ``(Z, Y, X)`` array → the file's ``(X, Y, Z)`` order that vol25d reads."""
    return np.ascontiguousarray(np.transpose(array, (2, 1, 0)))


def check_axes(label_path: Path) -> None:
    """Raise ``RuntimeError`` unless nnU-Net's reader and vol25d's see the label file's voxels in the same
    order after :func:`file_order`, so that masks are compared voxel for voxel."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    from vol25d.io import read_volume

    theirs, _ = SimpleITKIO().read_seg(str(label_path))
    ours = np.asarray(read_volume(label_path, dtype=None).array)
    if ours.ndim == 4:
        ours = ours[..., 0]
    if file_order(theirs[0]).shape != ours.shape or not np.array_equal(file_order(theirs[0]), ours):
        raise RuntimeError(f"{label_path}: nnU-Net's reader and vol25d's disagree on its voxel order; the "
                           "nnunet-* scores would not be comparable")

"""The two-path training schedule of the random 2.5D U-Net, as a library function.

- **Path 1** draws ``p`` of the ``m`` directions per step and trains U, F (and T unless frozen) end to end on
  the 3-D Dice, optionally plus a Dice of U's views against the label's own MIPs (deep supervision).
- **Path 2** starts from a path-1 checkpoint, freezes U, computes its views of every volume once (all ``m``
  directions) and trains F and T on them.

Both validate on held-out cases with all ``m`` directions and write the run folder of DESIGN.md:
``pathN.pt`` (best validation Dice), ``pathN_last.pt`` (for ``resume``), ``pathN_metrics.csv``,
``config.yaml``, TensorBoard events under ``tb/``.

Under ``torchrun`` (several processes, one GPU each; :mod:`vol25d.distributed`) every optimiser step
averages the gradients of one volume per process (DistributedDataParallel); rank 0 alone validates, logs
and writes the run folder, whose files are the same as a single process writes.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from monai.losses import DiceLoss
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from vol25d import distributed
from vol25d.capacity import plan_voxel_cap
from vol25d.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from vol25d.data.augment import AugmentConfig, augment
from vol25d.data.dataset import DatasetInfo, load_dataset, split_cases
from vol25d.data.prepare import PreparedCase, prepare_cases
from vol25d.data.preprocess import PreprocessConfig
from vol25d.device import amp_enabled, autocast, full_precision, resolve_device
from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.geometry import random_directions
from vol25d.model import DEFAULT_VIEW_CHUNK, ModelConfig, Random25DUNet, check_memory_controls
from vol25d.ops import mip

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "TrainResult", "train", "Objective", "lr_schedule", "FINE_TUNE_LR", "FINE_TUNE_MODEL_SETTINGS"]

# `vol25d train --path 1 --init CKPT` without --lr: a tenth of the default 3e-3, so that fine-tuning on a few
# cases of a new scanner adjusts the trained weights rather than starting over from them.
FINE_TUNE_LR = 3e-4


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training path (saved in ``config.yaml`` and the checkpoints).

    Attributes:
        path: 1 (random views, U trainable) or 2 (all views, U frozen, trains F and T).
        epochs: passes over the training cases.
        steps_per_case: optimiser steps per training case per epoch (path 1: each on its own random views
            and augmentation; path 2: on the cached views of all ``m`` directions).
        lr: peak learning rate of AdamW for U (F and T use ``small_lr_factor`` × it in path 1; path 2 trains
            them at ``lr``); warm-up
            over the first 5 % of steps, then cosine decay to 0. Default 3e-3 (measured on the phantoms: 1e-3
            learnt the same but slower).
        weight_decay: AdamW's decoupled weight decay.
        loss: ``"dice+bce"`` (MONAI ``DiceLoss`` plus BCE on the 3-D output; the default: with Dice alone the
            head's output stayed under 0.5 for 15 epochs on the phantoms, and path 2 collapsed to an empty
            mask, where BCE keeps a gradient) or ``"dice"``.
        small_lr_factor: path 1's learning rate of F and T (and the explained reconstruction's margin and
            softness) as a multiple of U's: a handful of parameters, each with a scale of its own.
        view_loss_weight: weight of the auxiliary Dice of U's views against the label's MIPs (path 1 only).
        train_head_in_path1: whether T trains in path 1 too (it always trains in path 2).
        val_fraction: share of the cases held out for validation (split by case, seeded).
        amp: bf16 autocast on CUDA.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
        seed: seeds weights, the split, the order of cases, the drawn directions and the augmentation.
        augment: path-1 augmentation (path 2 trains on U's cached views, so none there).
        view_chunk: views pushed through U at once when all ``m`` directions are used (validation, path 2's
            view cache): a memory control, not saved with the model.
        checkpoint_views: path 1: recompute U's activations in the backward over chunks of this many views
            (activation checkpointing; less memory, a second forward of U); ``0`` keeps them.
    """

    path: Literal[1, 2] = 1
    epochs: int = 100
    steps_per_case: int = 12
    lr: float | None = None
    small_lr_factor: float = 10.0
    weight_decay: float = 1e-4
    loss: Literal["dice", "dice+bce"] = "dice+bce"
    view_loss_weight: float = 1.0
    train_head_in_path1: bool = True
    val_fraction: float = 0.2
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    view_chunk: int = DEFAULT_VIEW_CHUNK
    checkpoint_views: int = 0

    def __post_init__(self):
        if self.path not in (1, 2):
            raise InputError(f"path must be 1 or 2; got {self.path!r}")
        if self.epochs < 1:
            raise InputError(f"epochs must be ≥ 1; got {self.epochs}")
        if not self.small_lr_factor > 0:
            raise InputError(f"small_lr_factor must be > 0; got {self.small_lr_factor}")
        if self.steps_per_case < 1:
            raise InputError(f"steps_per_case must be ≥ 1; got {self.steps_per_case}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1; got {self.val_fraction}")
        if self.loss not in ("dice", "dice+bce"):
            raise InputError(f"loss must be 'dice' or 'dice+bce'; got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        try:
            check_memory_controls(self.view_chunk, self.checkpoint_views)
        except ValueError as error:
            raise InputError(str(error)) from None
        if self.lr is None:
            object.__setattr__(self, "lr", 3e-3)
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a training path produced."""

    checkpoint: Path
    last_checkpoint: Path
    epochs: int
    best_dice: float
    best_epoch: int
    seconds: float


class Objective:
    """The loss: soft Dice on the 3-D output (optionally + BCE), plus the weighted Dice of U's views.

    It always computes in float32 with autocast off, whatever region it is called from: bf16 sums of a
    whole volume lose the Dice's small differences, and CUDA autocast refuses ``binary_cross_entropy``.
    """

    def __init__(self, config: TrainConfig):
        self.dice = DiceLoss(include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)
        self.bce = config.loss == "dice+bce"
        self.view_weight = config.view_loss_weight if config.path == 1 else 0.0

    def __call__(self, output, label, view_probabilities=None, label_views=None):
        with full_precision(output.device):
            output, label = output.float(), label.float()
            loss = self.dice(output, label)
            if self.bce:
                loss = loss + torch.nn.functional.binary_cross_entropy(output.clamp(1e-6, 1 - 1e-6), label)
            if self.view_weight and view_probabilities is not None:
                loss = loss + self.view_weight * self.dice(view_probabilities.float(), label_views.float())
        return loss


def lr_schedule(optimizer, total_steps: int):
    """Linear warm-up over the first 5 % of ``total_steps``, then cosine decay to 0 (a ``LambdaLR``)."""
    warmup = max(1, round(0.05 * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _write_config(out: Path, section: str, values: dict) -> None:
    path = out / "config.yaml"
    current = yaml.safe_load(path.read_text()) if path.exists() else {}
    current = current or {}
    current[section] = values
    with atomic_path(path) as temporary:
        temporary.write_text(yaml.safe_dump(current, sort_keys=False))


class _MetricsLog:
    """``pathN_metrics.csv``: one row per epoch; on resume the rows after the resumed epoch are dropped."""

    COLUMNS = ("epoch", "train_loss", "val_dice", "lr", "seconds")

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        rows = []
        if keep_epochs and path.exists():
            with path.open() as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= keep_epochs]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.COLUMNS).writerow(row)


def _checkpoint_values(model, dataset: DatasetInfo, preprocess: PreprocessConfig, config: TrainConfig, epoch, best,
                       split=((), ())):
    return {
        "data": {"dataset": str(dataset.root), "train_cases": [c.name for c in split[0]],
                 "val_cases": [c.name for c in split[1]]},
        "path": config.path,
        "model_config": model.config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "class_names": list(dataset.class_names),
        "channel_names": list(dataset.channel_names),
        "multi_label": bool(dataset.multi_label),
        "train_config": config.to_dict(),
        "unet_frozen": config.path == 2,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "best_dice": best[0],
        "best_epoch": best[1],
    }


def _check_init_fits(values: dict, dataset: DatasetInfo, init: Path) -> None:
    """An ``init`` checkpoint must take the dataset's channels and segment its classes, in the same order."""
    if len(values["channel_names"]) != len(dataset.channel_names):
        raise InputError(
            f"{init} was trained on {len(values['channel_names'])} image channel(s) {list(values['channel_names'])} "
            f"but {dataset.root} has {len(dataset.channel_names)} {list(dataset.channel_names)}; --init needs a model "
            "trained on the same channels"
        )
    if list(values["class_names"]) != list(dataset.class_names):
        raise InputError(
            f"{init} segments {list(values['class_names'])} but {dataset.root} labels {list(dataset.class_names)}; "
            "--init needs a model of the same classes in the same order (dataset.json's labels)"
        )


# Model settings a fine-tuning run may change: none of them shapes a weight.
FINE_TUNE_MODEL_SETTINGS = ("directions", "views")


def _fine_tune_model(values: dict, init: Path, model_config: ModelConfig | None) -> Random25DUNet:
    """Path 1 from a trained checkpoint: its model with its weights, U trainable (also after path 2)."""
    model = model_from_checkpoint(values, init)
    if model_config is not None:
        # A setting counts as asked for where it differs from both ModelConfig's default and the checkpoint's.
        given, default, trained = model_config.to_dict(), ModelConfig().to_dict(), model.config.to_dict()
        changed = {k: v for k, v in given.items()
                   if v != default[k] and v != trained[k] and k not in ("in_channels", "out_channels")}
        fixed = sorted(set(changed) - set(FINE_TUNE_MODEL_SETTINGS))
        if fixed:
            raise InputError(
                f"fine-tuning keeps the model settings of {init}; drop {fixed} (only "
                f"{', '.join(FINE_TUNE_MODEL_SETTINGS)} may change)"
            )
        if changed:
            settings = {**model.config.to_dict(), **changed}
            state = model.state_dict()
            model = Random25DUNet.from_config(ModelConfig.from_dict(settings))
            model.load_state_dict(state)
    model.unfreeze_unet()
    return model


@torch.no_grad()
def _view_cache(model: Random25DUNet, cases: list[PreparedCase], device, amp: bool) -> list[tuple]:
    """Path 2: U's probabilities of every volume at all ``m`` directions, computed once, kept on ``device``,
    with the image's own views (first channel) when the reconstruction needs them (``reconstruction="image"``),
    else ``None``: ``[(probabilities (1, K, m, D, S), image_views (1, 1, m, D, S) | None)]``."""
    cached = []
    for case in cases:
        with autocast(device, amp):
            cached.append(model.all_view_probabilities(case.image[None].to(device)))
    return cached


class _CachedViewsStep(torch.nn.Module):
    """Path 2's training forward, T ∘ R ∘ F on U's cached views, as a module so that DDP can wrap it.

    U's weights need no gradient, so DDP leaves them out of its all-reduce; F and T are used at every step,
    so it needs no ``find_unused_parameters`` (and its extra pass over the graph).
    """

    def __init__(self, model: Random25DUNet):
        super().__init__()
        self.model = model

    def forward(self, cached: tuple, image: torch.Tensor) -> torch.Tensor:
        """``cached``: one entry of :func:`_view_cache`; ``image`` ``(1, C, D, H, W)`` on its device."""
        probabilities, image_views = cached
        return self.model.segment_from_views(probabilities, image, image_views)


def _rank_seed(seed: int, rank: int) -> int:
    """Seed of process ``rank``'s augmentation and directions: ``seed`` itself on rank 0, as in a single process."""
    return seed + 1_000_003 * rank


def _dice_per_class(prediction: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Dice of each class of boolean ``(K, D, H, W)`` maps (1 where both are empty)."""
    overlap = (prediction & reference).flatten(1).sum(1).double()
    total = prediction.flatten(1).sum(1).double() + reference.flatten(1).sum(1).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total)).tolist()


@torch.no_grad()
def _validate(model, cases, device, amp, cache=None) -> float:
    if not cases:
        return float("nan")
    model.eval()
    from_cache = _CachedViewsStep(model)
    scores = []
    for i, case in enumerate(cases):
        with autocast(device, amp):
            if cache is not None:
                output = from_cache(cache[i], case.image[None].to(device))
            else:
                output = model(case.image[None].to(device))
        scores.extend(_dice_per_class(output[0].float() >= 0.5, case.label.to(device).bool()))
    return float(sum(scores) / len(scores))


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    model_config: ModelConfig | None = None,
    preprocess_options: dict | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Train one path on an MSD-layout dataset and write its files into the run folder ``out_dir``.

    Args:
        data_dir: the dataset (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        out_dir: the run folder.
        config: the :class:`TrainConfig` (``config.path`` picks the path).
        model_config: path 1: the model settings (``in_channels``/``out_channels`` are taken from the data).
        preprocess_options: path 1: :class:`PreprocessConfig` fields to fix (the rest is planned from the data).
        init: path 2: the path-1 checkpoint to start from (required). Path 1: a trained checkpoint
            (``path1.pt`` or ``path2.pt``) to fine-tune: its weights, model settings and preprocessing plan
            are kept (``model_config`` may change only :data:`FINE_TUNE_MODEL_SETTINGS`; a setting counts as
            changed where it differs from both the default and the checkpoint's), its channels and
            classes must be the dataset's; U trains again. Pass a lower ``config.lr`` (the CLI defaults to
            :data:`FINE_TUNE_LR`).
        resume: continue from ``out_dir/pathN_last.pt`` (model, optimiser, scheduler, epoch, RNG states).
        quiet: no progress bar.

    Under ``torchrun`` each process trains on its share of the cases and DDP averages the gradients (one
    volume per process per step; the learning rate is not scaled); each process draws its own directions and
    augmentation. Rank 0 validates, logs and writes the run folder; ``resume`` needs as many processes as
    the run had.

    Returns:
        A :class:`TrainResult` (the same on every process).
    """
    device, created = distributed.setup(resolve_device(config.device))
    try:
        return _train(data_dir, out_dir, config, device, model_config, preprocess_options, init, resume, quiet)
    finally:
        distributed.cleanup(created)


def _train(data_dir, out_dir, config, device, model_config, preprocess_options, init, resume, quiet) -> TrainResult:
    start_time = time.perf_counter()
    out = Path(out_dir)
    tag = f"path{config.path}"
    rank, world = distributed.rank(), distributed.world_size()
    main = rank == 0
    dataset = load_dataset(data_dir)
    train_cases, val_cases = split_cases(dataset.cases, config.val_fraction, config.seed)
    # Each process draws its own augmentation (and directions, below), rank 0 exactly as a single process;
    # fresh weights differ per process only until DDP copies rank 0's to all when it wraps the model.
    torch.manual_seed(_rank_seed(config.seed, rank))

    last_path = out / f"{tag}_last.pt"
    resumed = None
    if resume:
        if not last_path.exists():
            raise InputError(f"there is no {last_path} to resume from; run without --resume to start path {config.path}")
        resumed = load_checkpoint(last_path)
        if int(resumed.get("world_size", 1)) != world:
            raise InputError(
                f"{last_path} was saved by a run on {resumed.get('world_size', 1)} process(es) but this one has "
                f"{world}; resume with as many (torchrun --nproc_per_node), or start a new run folder"
            )

    if config.path == 1:
        if resumed is not None:
            model = model_from_checkpoint(resumed, last_path)
            preprocess = PreprocessConfig.from_dict(resumed["preprocess"])
        elif init is not None:  # fine-tuning: the checkpoint's weights, model settings and preprocessing plan
            init_values = load_checkpoint(init)
            _check_init_fits(init_values, dataset, Path(init))
            model = _fine_tune_model(init_values, Path(init), model_config)
            preprocess = PreprocessConfig.from_dict(init_values["preprocess"])
            if main:
                log.info("path1: fine-tuning %s (its model settings and preprocessing) at lr %.2g", init, config.lr)
        else:
            settings = dataclasses.asdict(model_config or ModelConfig())
            settings.update(in_channels=len(dataset.channel_names), out_channels=len(dataset.class_names))
            model = Random25DUNet.from_config(ModelConfig(**settings))
            preprocess = None
    else:
        if init is None:
            raise InputError("path 2 starts from a path-1 checkpoint: pass --init RUN/path1.pt")
        init_values = load_checkpoint(init)
        _check_init_fits(init_values, dataset, Path(init))
        model = model_from_checkpoint(resumed or init_values, last_path if resumed else init)
        model.freeze_unet()
        preprocess = PreprocessConfig.from_dict(init_values["preprocess"])

    amp = amp_enabled(device, config.amp)
    model.view_chunk, model.checkpoint_views = config.view_chunk, config.checkpoint_views

    def voxel_cap(shape):  # measured on every process's GPU; rank 0's cap plans them all alike
        cached = math.ceil(len(train_cases) / world) + len(val_cases)
        cap = plan_voxel_cap(model.config, shape, device, amp, cached, len(train_cases) + len(val_cases),
                             config.checkpoint_views)
        return distributed.broadcast(cap)

    train_data, val_data, preprocess = prepare_cases(dataset, train_cases, val_cases, preprocess, preprocess_options,
                                                     voxel_cap)
    model.to(device)
    if main:
        out.mkdir(parents=True, exist_ok=True)

    # F and T (and the explained reconstruction's margin and softness) learn at small_lr_factor × U's rate.
    small = list(model.filtration.parameters())
    if model.explanation is not None:
        small += list(model.explanation.parameters())
    if config.path == 2 or config.train_head_in_path1:
        small += list(model.head.parameters())
    else:
        model.head.requires_grad_(False)
    groups = [{"params": small, "lr": config.lr * (config.small_lr_factor if config.path == 1 else 1),
               "weight_decay": 0.0}]
    if config.path == 1:
        groups.append({"params": list(model.unet.parameters()), "lr": config.lr})
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    repeats = config.steps_per_case
    # Path 1 deals each epoch's shuffled cases out to the processes, as DistributedSampler does; path 2 gives
    # each process a fixed share (it caches U's views of those cases only) and shuffles within it. The
    # shuffle generator is seeded alike on every process, so all draw the same permutation.
    owned = distributed.shard(list(range(len(train_data))), rank, world)
    steps_per_epoch = math.ceil(len(train_data) * repeats / world) if config.path == 1 else len(owned) * repeats
    scheduler = lr_schedule(optimizer, config.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)
    directions = torch.Generator().manual_seed(_rank_seed(config.seed, rank))  # path 1's draws of p of m
    start_epoch, best = 0, (float("-inf"), 0)
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        own_rng = resumed["rng"]["ranks"][rank] if world > 1 else resumed["rng"]
        shuffle.set_state(resumed["rng"]["shuffle"])
        directions.set_state(own_rng["directions"])
        torch.set_rng_state(own_rng["torch"])
        start_epoch, best = int(resumed["epoch"]), (float(resumed["best_dice"]), int(resumed["best_epoch"]))

    metrics = writer = None
    if main:
        _write_config(out, tag, {
            "data": str(Path(data_dir).resolve()), "init": str(init) if init else None,
            "train": config.to_dict(), "model": model.config.to_dict(), "preprocess": preprocess.to_dict(),
            "classes": list(dataset.class_names), "channels": list(dataset.channel_names),
            "split": {"train": [c.name for c in train_data], "val": [c.name for c in val_data]},
            "device": str(device), "processes": world, "volumes_per_step": world,
        })
        metrics = _MetricsLog(out / f"{tag}_metrics.csv", start_epoch)
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

        writer = SummaryWriter(str(out / "tb" / tag))
    objective = Objective(config)
    cache = val_cache = None
    if config.path == 2:
        mine = sorted(set(owned))
        cache = dict(zip(mine, _view_cache(model, [train_data[i] for i in mine], device, amp)))
        val_cache = _view_cache(model, val_data, device, amp) if main else None
    net = model if config.path == 1 else _CachedViewsStep(model)
    if world > 1:
        # Copies rank 0's weights to every process, then averages the gradients at every backward.
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if main:
        log.info(
            "%s: %d training / %d validation cases, %d epochs of %d steps, device %s, %d process(es): "
            "%d volume(s) per optimiser step, lr %.2g (not scaled with the number of processes)",
            tag, len(train_data), len(val_data), config.epochs, steps_per_epoch, device, world, world, config.lr,
        )
        if len(train_data) < world:
            log.warning("%d training cases for %d processes: some processes repeat cases in every epoch",
                        len(train_data), world)

    for epoch in range(start_epoch + 1, config.epochs + 1):
        epoch_start = time.perf_counter()
        net.train()
        if config.path == 1:
            everyone = [i for _ in range(repeats) for i in torch.randperm(len(train_data), generator=shuffle).tolist()]
            order = distributed.shard(everyone, rank, world)
        else:
            order = [owned[j] for _ in range(repeats) for j in torch.randperm(len(owned), generator=shuffle).tolist()]
        losses = []
        bar = tqdm(order, desc=f"{tag} epoch {epoch}/{config.epochs}", disable=quiet or not sys.stderr.isatty() or not main, leave=False, unit="vol")
        for index in bar:
            case = train_data[index]
            label = case.label[None].to(device).float()
            if config.path == 1:
                image = case.image[None].to(device)
                if config.augment.enabled:  # in float32: the label's warp is thresholded after
                    image, label = augment(image, label, config.augment)
                angles = random_directions(model.config.directions, model.config.views, directions).to(device)
                label_views = mip(label, angles) if objective.view_weight else None
                with autocast(device, amp):
                    output, views = net(image, angles, return_views=True)
                loss = objective(output, label, views, label_views)
            else:
                with autocast(device, amp):
                    output = net(cache[index], case.image[None].to(device))
                loss = objective(output, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_loss = distributed.mean(sum(losses) / len(losses), device)
        own_rng = {"directions": directions.get_state(), "torch": torch.get_rng_state()}
        every_rng = distributed.gather(own_rng) if world > 1 else None
        if main:
            val_dice = _validate(model, val_data, device, amp, val_cache)
            seconds = time.perf_counter() - epoch_start
            lr = scheduler.get_last_lr()[-1]
            metrics.append({"epoch": epoch, "train_loss": f"{train_loss:.6f}", "val_dice": f"{val_dice:.6f}",
                            "lr": f"{lr:.6g}", "seconds": f"{seconds:.2f}"})
            writer.add_scalar(f"{tag}/train_loss", train_loss, epoch)
            writer.add_scalar(f"{tag}/val_dice", val_dice, epoch)
            writer.add_scalar(f"{tag}/lr", lr, epoch)
            score = val_dice if not math.isnan(val_dice) else -train_loss
            if score > best[0] or epoch == 1:
                best = (score, epoch)
            values = _checkpoint_values(model, dataset, preprocess, config, epoch, best, (train_data, val_data))
            if best[1] == epoch:
                save_checkpoint(values, out / f"{tag}.pt")
            rng = {"shuffle": shuffle.get_state(), **own_rng, **({"ranks": every_rng} if every_rng else {})}
            save_checkpoint({**values, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "rng": rng, "world_size": world}, last_path)
            log.info("%s epoch %d/%d: loss %.4f, validation Dice %.4f (%.1f s)", tag, epoch, config.epochs,
                     train_loss, val_dice, seconds)
        distributed.barrier()  # the others wait while rank 0 validates and writes
    best = distributed.broadcast(best)
    seconds = time.perf_counter() - start_time
    if main:
        writer.close()
        log.info("%s done: best validation Dice %.4f at epoch %d → %s (%.0f s)", tag, best[0], best[1], out / f"{tag}.pt", seconds)
    return TrainResult(out / f"{tag}.pt", last_path, config.epochs, best[0], best[1], seconds)

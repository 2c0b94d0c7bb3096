"""The training loop both paths run: set-up, epochs, DDP, logging, checkpoints and resume.

:func:`train` reads the data, picks where the model starts (:mod:`vol25d.train.start`), preprocesses the
cases, builds the path's :class:`~vol25d.train.paths.Stage` and hands it to :func:`fit`, which owns the
optimiser, the schedule, the epochs and the run folder (:class:`~vol25d.checkpoint.RunFolder`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from vol25d import distributed
from vol25d.capacity import plan_voxel_cap
from vol25d.checkpoint import Checkpoint, MetricsLog, Resume, RunFolder
from vol25d.data.dataset import DatasetInfo, load_dataset, split_cases
from vol25d.data.prepare import prepare_cases
from vol25d.data.preprocess import PreprocessConfig
from vol25d.device import amp_enabled, resolve_device
from vol25d.model import ModelConfig
from vol25d.ops import backend
from vol25d.progress import Progress
from vol25d.settings import check_start, model_settings_asked
from vol25d.train.config import TrainConfig, TrainResult
from vol25d.train.curves import write_progress_plot
from vol25d.train.objective import lr_schedule
from vol25d.train.paths import Cases, Stage, path1, path1_probe, path2, rank_seed
from vol25d.train.start import resumed_checkpoint, starting_model

log = logging.getLogger(__name__)

__all__ = ["train", "fit", "RunInfo"]


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
    deadline: float | None = None,
    on_best: Callable[[Path, int, float], None] | None = None,
) -> TrainResult:
    """Train one path on an MSD-layout dataset and write its files into the run folder ``out_dir``.

    Args:
        data_dir: the dataset (``imagesTr/``, ``labelsTr/``, ``dataset.json``).
        out_dir: the run folder.
        config: the :class:`TrainConfig` (``config.path`` picks the path; unset ``epochs`` take the default
            of the device it trains on, :data:`~vol25d.train.DEFAULT_EPOCHS`).
        model_config: path 1: the model settings (``in_channels``/``out_channels`` are taken from the data).
        preprocess_options: path 1: :class:`PreprocessConfig` fields to fix (the rest is planned from the data).
        init: path 2: the path-1 checkpoint to start from (required). Path 1: a trained checkpoint
            (``path1.pt`` or ``path2.pt``) to fine-tune: its weights, model settings and preprocessing plan
            are kept (``model_config`` may change only :data:`~vol25d.train.FINE_TUNE_MODEL_SETTINGS`; a
            setting counts as changed where it differs from both the default and the checkpoint's), its
            channels and classes must be the dataset's; U trains again. Pass a lower ``config.lr`` (the CLI
            defaults to :data:`~vol25d.train.FINE_TUNE_LR`).
        resume: continue from ``out_dir/pathN_last.pt`` (model, optimiser, scheduler, epoch, RNG states).
        quiet: no progress (bars or lines, :mod:`vol25d.progress`) of reading, preprocessing, path 2's view
            cache and training; the log's other lines stay.
        deadline: a wall-clock time (:func:`time.time`) to stop by: after an epoch, when the next one would end
            past it (taking as long as the longest epoch so far), the path stops with its checkpoints written
            and ``resume`` continues it; the result says ``out_of_time``. At least one epoch runs. ``None``:
            no limit.
        on_best: called on rank 0 as ``on_best(pathN.pt, epoch, best score)`` right after an epoch that
            improved the best checkpoint has written it.

    Under ``torchrun`` each process trains on its share of the cases and DDP averages the gradients (one
    volume per process per step; the learning rate is not scaled); each process draws its own directions and
    augmentation. Rank 0 validates, logs and writes the run folder; ``resume`` needs as many processes as
    the run had.

    The rules of where a path starts (:func:`vol25d.settings.check_start`, the settings ``model_config`` asks
    for being :func:`~vol25d.settings.model_settings_asked`) are checked before anything else, as ``vol25d
    train`` checks them: path 2 may ask for no model setting, ``init`` keeps its preprocessing and projection.

    Returns:
        A :class:`TrainResult` (the same on every process).

    Raises:
        InputError: a setting these rules refuse, in the same sentence as ``vol25d train``'s.
    """
    check_start(config.path, init=init, resume=resume, model=model_settings_asked(model_config),
                preprocess=preprocess_options or ())
    device, created = distributed.setup(resolve_device(config.device))
    try:
        config = config.for_device(device)
        start_time = time.perf_counter()
        info, stage, resumed = _set_up(data_dir, out_dir, config, device, model_config, preprocess_options, init,
                                       resume, quiet)
        result = fit(stage, config, info, resumed, quiet, start_time, deadline=deadline, on_best=on_best)
        # Every process is done before the group goes. Without this wait a rank that left while rank 0 was still
        # closing its run folder sometimes aborted at exit ("terminate called without an active exception": 2 of
        # about 20 torchrun tests on 2 busy cores; none of 24 with it).
        distributed.barrier()
        return result
    finally:
        distributed.cleanup(created)


@dataclass
class RunInfo:
    """What the run folder records of a path besides the weights: where, on what, with what."""

    run: RunFolder
    dataset: DatasetInfo
    data_dir: Path
    init: str | Path | None
    preprocess: PreprocessConfig
    cases: Cases


def _set_up(data_dir, out_dir, config: TrainConfig, device, model_config, preprocess_options, init, resume,
            quiet: bool = False) -> tuple[RunInfo, Stage, Checkpoint | None]:
    """The data split, the starting model, the preprocessed cases and the path's stage (with progress of the
    reading, preprocessing and path 2's view cache on rank 0 unless ``quiet``)."""
    run = RunFolder(out_dir)
    rank, world = distributed.rank(), distributed.world_size()
    quiet = quiet or rank != 0
    dataset = load_dataset(data_dir)
    train_cases, val_cases = split_cases(dataset.cases, config.val_fraction, config.seed)
    # Each process draws its own augmentation (and directions), rank 0 exactly as a single process; fresh
    # weights differ per process only until DDP copies rank 0's to all when it wraps the model.
    torch.manual_seed(rank_seed(config.seed, rank))
    resumed = resumed_checkpoint(run, config.path, world) if resume else None
    model, preprocess = starting_model(config, dataset, model_config, init, resumed, run.last(config.path))
    model.view_chunk, model.checkpoint_views = config.view_chunk, config.checkpoint_views
    amp = amp_enabled(device, config.amp)

    def voxel_cap(shape):  # measured on every process's GPU; rank 0's cap plans them all alike
        cached = math.ceil(len(train_cases) / world) + len(val_cases)
        cap = plan_voxel_cap(model.config, shape, device, lambda s: path1_probe(model.config, config, s, device, amp),
                             cached, len(train_cases) + len(val_cases))
        return distributed.broadcast(cap)

    train_data, val_data, preprocess = prepare_cases(dataset, train_cases, val_cases, preprocess, preprocess_options,
                                                     voxel_cap, quiet=quiet)
    model.to(device)
    cases = Cases(train_data, val_data, device, amp, rank, world)
    stage = path1(model, cases, config) if config.path == 1 else path2(model, cases, config, quiet=quiet)
    return RunInfo(run, dataset, Path(data_dir), init, preprocess, cases), stage, resumed


def fit(stage: Stage, config: TrainConfig, info: RunInfo, resumed: Checkpoint | None = None, quiet: bool = False,
        start_time: float | None = None, *, deadline: float | None = None,
        on_best: Callable[[Path, int, float], None] | None = None) -> TrainResult:
    """Run ``stage`` for ``config.epochs`` epochs (from ``resumed``'s, if given): AdamW with the warm-up and
    cosine schedule, one optimiser step per volume per process, validation, metrics, ``progress.png``,
    TensorBoard and the two checkpoints after every epoch on rank 0, and one progress bar of the whole path
    (epochs × steps, its ETA, the last loss and validation Dice) on rank 0 unless ``quiet``. ``deadline`` and
    ``on_best`` as in :func:`train`."""
    start_time = time.perf_counter() if start_time is None else start_time
    cases, path, main = info.cases, config.path, info.cases.rank == 0
    optimizer = torch.optim.AdamW(stage.parameter_groups, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = lr_schedule(optimizer, config.epochs * stage.steps_per_epoch)
    shuffle = torch.Generator().manual_seed(config.seed)
    start_epoch, best = _restore(resumed, optimizer, scheduler, shuffle, stage.generators, cases)
    recorder = _Recorder(stage, info, config, start_epoch) if main else None
    net = stage.net
    if cases.world > 1:  # copies rank 0's weights to every process, then averages the gradients at every backward
        net = DistributedDataParallel(net, device_ids=[cases.device.index] if cases.device.type == "cuda" else None)
    if main and resumed is None and info.init is not None:
        best = _starting_score(stage, config, info, best)
    done, out_of_time, longest = start_epoch, False, 0.0
    steps = stage.steps_per_epoch
    bar = Progress(config.epochs * steps, f"path{path}", unit="step", initial=start_epoch * steps, logger=log,
                   quiet=quiet or not main)
    epochs = range(start_epoch + 1, config.epochs + 1)
    for epoch in bar.over(epochs, lambda number: f"path{path} epoch {number}/{config.epochs}"):
        epoch_start = time.perf_counter()
        train_loss = _epoch(stage, net, optimizer, scheduler, shuffle, bar, cases.device)
        rng = _rng_states(shuffle, stage.generators, cases.world)
        if main:
            val_dice = stage.validate()
            score = val_dice if not math.isnan(val_dice) else -train_loss
            if score > best[0] or best == (float("-inf"), 0):  # the first epoch of a path with no best yet
                best = (score, epoch)
            recorder.epoch(epoch, train_loss, val_dice, scheduler.get_last_lr()[-1], time.perf_counter() - epoch_start)
            bar.set_postfix(**{"val Dice": f"{val_dice:.3f}"})
            _save(stage, config, info, epoch, best, Resume(optimizer.state_dict(), scheduler.state_dict(), rng,
                                                           cases.world))
            if on_best is not None and best[1] == epoch:
                on_best(info.run.best(path), epoch, best[0])
        distributed.barrier()  # the others wait while rank 0 validates and writes
        done, longest = epoch, max(longest, time.perf_counter() - epoch_start)
        if deadline is not None and epoch < config.epochs and distributed.broadcast(time.time() + longest > deadline):
            out_of_time = True
            if main:
                log.info("path%d: stopped for time after epoch %d/%d (the next would end past the deadline); "
                         "resume continues it", path, epoch, config.epochs)
            break
    best = distributed.broadcast(best)
    seconds = time.perf_counter() - start_time
    if main:
        recorder.close(best, seconds)
    return TrainResult(info.run.best(path), info.run.last(path), done, best[0], best[1], seconds, out_of_time)


def _starting_score(stage: Stage, config: TrainConfig, info: RunInfo, best: tuple[float, int]) -> tuple[float, int]:
    """The validation Dice of the model a path starts from (``--init``: path 2's path-1 model, or the model
    path 1 fine-tunes), saved as ``pathN.pt`` at epoch 0, so that an epoch must beat it to replace it: training
    from a trained model never ends worse on its own validation cases than where it began. ``best`` unchanged
    when there are no validation cases."""
    score = stage.validate()
    if math.isnan(score):
        return best
    log.info("path%d: the starting model's validation Dice %.4f (epoch 0); %s keeps it unless an epoch beats it",
             config.path, score, info.run.best(config.path).name)
    best = (score, 0)
    _checkpoint(stage, config, info, 0, best).save(info.run.best(config.path))
    return best


def _epoch(stage: Stage, net, optimizer, scheduler, shuffle: torch.Generator, bar: Progress, device) -> float:
    """One pass over this process's order of the training cases, a step of ``bar`` each; the mean loss over
    all processes."""
    net.train()
    losses = []
    for index in stage.order(shuffle):
        loss = stage.step(net, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        bar.update(loss=f"{losses[-1]:.3f}")
    return distributed.mean(sum(losses) / len(losses), device)


def _rng_states(shuffle: torch.Generator, generators: dict, world: int) -> dict:
    """The random states ``--resume`` restores: the shared shuffle, and per process its step generators and
    torch's global RNG (gathered from every process under DDP)."""
    own = {**{name: generator.get_state() for name, generator in generators.items()}, "torch": torch.get_rng_state()}
    every = distributed.gather(own) if world > 1 else None
    return {"shuffle": shuffle.get_state(), **own, **({"ranks": every} if every else {})}


def _restore(resumed: Checkpoint | None, optimizer, scheduler, shuffle: torch.Generator, generators: dict,
             cases: Cases) -> tuple[int, tuple[float, int]]:
    """Put a resumed run's optimiser, schedule and random states back; ``(epochs done, (best score, epoch))``."""
    if resumed is None:
        return 0, (float("-inf"), 0)
    state = resumed.resume
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    own = state.rng["ranks"][cases.rank] if cases.world > 1 else state.rng
    shuffle.set_state(state.rng["shuffle"])
    for name, generator in generators.items():
        generator.set_state(own[name])
    torch.set_rng_state(own["torch"])
    return int(resumed.epoch), (float(resumed.best_dice), int(resumed.best_epoch))


def _save(stage: Stage, config: TrainConfig, info: RunInfo, epoch: int, best: tuple[float, int], resume: Resume):
    """``pathN.pt`` when ``epoch`` is the best so far, and ``pathN_last.pt`` (with ``resume``) always."""
    checkpoint = _checkpoint(stage, config, info, epoch, best)
    if best[1] == epoch:
        checkpoint.save(info.run.best(config.path))
    dataclasses.replace(checkpoint, resume=resume).save(info.run.last(config.path))


def _checkpoint(stage: Stage, config: TrainConfig, info: RunInfo, epoch: int, best: tuple[float, int]) -> Checkpoint:
    """The checkpoint of ``stage``'s model at ``epoch``, with what the run folder records of it."""
    return Checkpoint.of_model(
        stage.model, preprocess=info.preprocess.to_dict(), class_names=list(info.dataset.class_names),
        channel_names=list(info.dataset.channel_names), multi_label=bool(info.dataset.multi_label), path=config.path,
        train_config=config.to_dict(), dataset=str(info.dataset.root),
        train_cases=[c.name for c in info.cases.train], val_cases=[c.name for c in info.cases.val],
        epoch=epoch, best_dice=best[0], best_epoch=best[1], ops_backend=backend.describe(info.cases.device),
    )


class _Recorder:
    """Rank 0's record of a path: ``config.yaml``, the metrics CSV, ``progress.png``, TensorBoard and the log."""

    def __init__(self, stage: Stage, info: RunInfo, config: TrainConfig, start_epoch: int):
        run, path, cases = info.run, config.path, info.cases
        run.root.mkdir(parents=True, exist_ok=True)
        # The kernels are checked now, so the record says which run (a later fallback is recorded at close).
        self.kernels = backend.resolve(cases.device)
        log.info("path%d: projection kernels on %s: %s", path, cases.device, self.kernels)
        self.record = dict(data=info.data_dir.resolve(), init=info.init, train=config.to_dict(),
                           model=stage.model.config.to_dict(), preprocess=info.preprocess.to_dict(),
                           classes=info.dataset.class_names, channels=info.dataset.channel_names,
                           split=([c.name for c in cases.train], [c.name for c in cases.val]),
                           device=str(cases.device), processes=cases.world)
        run.record(path, **self.record, ops_backend=self.kernels)
        self.path, self.epochs, self.run, self.device = path, config.epochs, run, cases.device
        self.metrics = MetricsLog(run.metrics(path), start_epoch)
        from torch.utils.tensorboard import SummaryWriter  # slow to import; only training needs it

        self.writer = SummaryWriter(str(run.tensorboard(path)))
        log.info("path%d: %d training / %d validation cases, %d epochs of %d steps, device %s, %d process(es): "
                 "%d volume(s) per optimiser step, lr %.2g (not scaled with the number of processes)", path,
                 len(cases.train), len(cases.val), config.epochs, stage.steps_per_epoch, cases.device, cases.world,
                 cases.world, config.lr)
        if len(cases.train) < cases.world:
            log.warning("%d training cases for %d processes: some processes repeat cases in every epoch",
                        len(cases.train), cases.world)

    def epoch(self, epoch: int, train_loss: float, val_dice: float, lr: float, seconds: float) -> None:
        self.metrics.append(epoch, train_loss, val_dice, lr, seconds)
        for name, value in (("train_loss", train_loss), ("val_dice", val_dice), ("lr", lr)):
            self.writer.add_scalar(f"path{self.path}/{name}", value, epoch)
        log.info("path%d epoch %d/%d: loss %.4f, validation Dice %.4f (%.1f s)", self.path, epoch, self.epochs,
                 train_loss, val_dice, seconds)
        try:  # a picture of the curves must not end a run
            write_progress_plot(self.run)
        except Exception as error:  # noqa: BLE001 — matplotlib can fail in many ways (fonts, backends, disk)
            log.warning("could not write %s (%s: %s); training goes on", self.run.progress_plot,
                        type(error).__name__, error)

    def close(self, best: tuple[float, int], seconds: float) -> None:
        self.writer.close()
        kernels = backend.describe(self.device)
        if kernels != self.kernels:  # a kernel failed during the run: the reference kernels ran from then on
            self.run.record(self.path, **self.record, ops_backend=kernels)
        log.info("path%d done: best validation Dice %.4f at epoch %d → %s (%.0f s)", self.path, best[0], best[1],
                 self.run.best(self.path), seconds)

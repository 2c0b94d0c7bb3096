"""The two training paths, each as what it trains and what one step computes (a :class:`Stage`).

:func:`path1` and :func:`path2` build the stage; :func:`vol25d.train.loop.fit` runs any stage through its
epochs (DDP, logging, checkpoints, resume).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vol25d import distributed
from vol25d.data.augment import augment
from vol25d.data.prepare import PreparedCase
from vol25d.device import autocast
from vol25d.geometry import random_directions
from vol25d.model import ModelConfig, Random25DUNet
from vol25d.ops import mip
from vol25d.progress import track
from vol25d.train.config import TrainConfig
from vol25d.train.objective import Objective

__all__ = ["Cases", "Stage", "path1", "path2", "path1_probe", "rank_seed", "validate"]

log = logging.getLogger(__name__)


@dataclass
class Cases:
    """The preprocessed cases one process trains on, where, and its place among the processes."""

    train: list[PreparedCase]
    val: list[PreparedCase]
    device: torch.device
    amp: bool
    rank: int = 0
    world: int = 1


@dataclass
class Stage:
    """One training path as :func:`~vol25d.train.loop.fit` runs it.

    Attributes:
        model: the model whose weights the checkpoints save.
        net: what one step calls (``model`` itself, or a module around it), the module DDP wraps.
        parameter_groups: AdamW's groups (the parameters trained, each group's learning rate).
        step: ``step(net, index) → loss`` of training case ``index``, before the backward.
        order: ``order(shuffle) → indices``: this process's training cases of one epoch, in order.
        steps_per_epoch: the length of every ``order``.
        validate: the mean validation Dice of ``model`` (rank 0 calls it).
        generators: random generators of the steps whose state ``--resume`` restores, by name.
    """

    model: Random25DUNet
    net: torch.nn.Module
    parameter_groups: list[dict]
    step: Callable[[torch.nn.Module, int], torch.Tensor]
    order: Callable[[torch.Generator], list[int]]
    steps_per_epoch: int
    validate: Callable[[], float]
    generators: dict[str, torch.Generator] = field(default_factory=dict)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of process ``rank``'s augmentation and directions: ``seed`` itself on rank 0, as in a single process."""
    return seed + 1_000_003 * rank


def path1(model: Random25DUNet, cases: Cases, config: TrainConfig) -> Stage:
    """Path 1 trains U, F and (unless ``train_head_in_path1`` is off) T end to end, F and T at
    ``small_lr_factor`` × U's learning rate (T's image correction at U's).

    One step: augment a training case, draw ``p`` of the ``m`` directions, and compute the 3-D Dice (+ BCE) of
    ``T ∘ R ∘ F ∘ U ∘ M`` of the image at them, plus the weighted Dice of U's views against the label's MIPs.
    Each epoch deals the shuffled cases (``steps_per_case`` times over) out to the processes.
    """
    device, amp = cases.device, cases.amp
    directions = torch.Generator().manual_seed(rank_seed(config.seed, cases.rank))
    objective = Objective(config)
    if not config.train_head_in_path1:
        model.head.requires_grad_(False)
    # T's image correction (a 3×3×3 convolution starting at zero) learns at U's rate: at the small parameters'
    # rate its first steps would already move the logits by several units.
    head = dict(model.head.named_parameters()) if config.train_head_in_path1 else {}
    context = [q for name, q in head.items() if name.startswith("context.")]
    small = [*_reconstruction_parameters(model), *(q for name, q in head.items() if not name.startswith("context."))]
    groups = [{"params": small, "lr": config.lr * config.small_lr_factor, "weight_decay": 0.0},
              {"params": list(model.unet.parameters()), "lr": config.lr}]
    if context:
        groups.append({"params": context, "lr": config.lr, "weight_decay": 0.0})

    def step(net: torch.nn.Module, index: int) -> torch.Tensor:
        case = cases.train[index]
        image, label = case.image[None].to(device), case.label[None].to(device).float()
        if config.augment.enabled:  # in float32: the label's warp is thresholded after
            image, label = augment(image, label, config.augment)
        angles = random_directions(model.config.directions, model.config.views, directions).to(device)
        label_views = mip(label, angles) if objective.view_weight else None
        with autocast(device, amp):
            output, views = net(image, angles, return_views=True)
        return objective(output, label, views, label_views)

    def order(shuffle: torch.Generator) -> list[int]:
        everyone = [i for _ in range(config.steps_per_case)
                    for i in torch.randperm(len(cases.train), generator=shuffle).tolist()]
        return distributed.shard(everyone, cases.rank, cases.world)

    return Stage(model, model, groups, step, order, math.ceil(len(cases.train) * config.steps_per_case / cases.world),
                 lambda: validate(model, cases.val, device, amp), {"directions": directions})


def path1_probe(model_config: ModelConfig, config: TrainConfig, shape_dhw: tuple[int, int, int], device: torch.device,
                amp: bool) -> float:
    """One path-1 training step of a fresh ``model_config`` model on a random volume of ``shape_dhw`` voxels,
    as :func:`path1` and :func:`~vol25d.train.loop.fit` run it with ``config`` (augmentation, loss, activation
    checkpointing, AdamW over the path's parameter groups); its loss. :mod:`vol25d.capacity` measures its memory.

    Torch's random states are restored after it, so a run that measured is the run that did not.
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = Random25DUNet.from_config(model_config, checkpoint_views=config.checkpoint_views).to(device).train()
        generator = torch.Generator().manual_seed(0)
        image = torch.rand(model_config.in_channels, *shape_dhw, generator=generator)
        label = (torch.rand(model_config.out_channels, *shape_dhw, generator=generator) > 0.95).to(torch.uint8)
        stage = path1(model, Cases([PreparedCase("probe", image, label, None)], [], device, amp), config)
        optimizer = torch.optim.AdamW(stage.parameter_groups, lr=config.lr, weight_decay=config.weight_decay)
        loss = stage.step(stage.net, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())


def path2(model: Random25DUNet, cases: Cases, config: TrainConfig, quiet: bool = False) -> Stage:
    """Path 2 trains F and T at the full learning rate with U frozen.

    U's probabilities at all ``m`` directions of every case are computed once (:func:`view_cache`, with
    progress unless ``quiet``; each process caches its own share of the training cases, rank 0 also the
    validation cases), and of ``config.path2_copies`` augmented copies of each training case (path 1's
    augmentation, drawn once from the run's seed). One step: the 3-D Dice (+ BCE) of ``T ∘ R ∘ F`` of one
    cached case or copy. Each epoch is ``steps_per_case`` steps per case of the process's share: without
    copies each case that many times, shuffled; with them, shuffled passes over every case and copy.
    """
    device, amp = cases.device, cases.amp
    objective = Objective(config)
    owned = distributed.shard(list(range(len(cases.train))), cases.rank, cases.world)
    mine = sorted(set(owned))
    copies = config.path2_copies
    # Entry i·(copies + 1) + c: training case i (c = 0) or its c-th augmented copy: (image, label) as in PreparedCase.
    augmenting = torch.Generator().manual_seed(rank_seed(config.seed, cases.rank) + 2)
    entries = {}
    for i in mine:
        case = cases.train[i]
        entries[i * (copies + 1)] = (case.image, case.label)
        for c in range(1, copies + 1):
            image, label = augment(case.image[None].float(), case.label[None], config.augment, generator=augmenting)
            entries[i * (copies + 1) + c] = (image[0], label[0])
    val = cases.val if cases.rank == 0 else []
    keys = list(entries)
    views = view_cache(model, [*(PreparedCase(str(key), *entries[key], None) for key in keys), *val], device, amp,
                       quiet=quiet)
    cache = dict(zip(keys, views[:len(keys)]))
    val_cache = views[len(keys):] if cases.rank == 0 else None
    groups = [{"params": [*_reconstruction_parameters(model), *model.head.parameters()], "lr": config.lr,
               "weight_decay": 0.0}]

    def step(net: torch.nn.Module, key: int) -> torch.Tensor:
        image, label = entries[key]
        with autocast(device, amp):
            output = net(cache[key], image[None].to(device))
        return objective(output, label[None].to(device).float())

    def order(shuffle: torch.Generator) -> list[int]:
        if not copies:
            return [owned[j] for _ in range(config.steps_per_case)
                    for j in torch.randperm(len(owned), generator=shuffle).tolist()]
        every = [i * (copies + 1) + c for i in owned for c in range(copies + 1)]
        drawn: list[int] = []
        while len(drawn) < len(owned) * config.steps_per_case:
            drawn += [every[j] for j in torch.randperm(len(every), generator=shuffle).tolist()]
        return drawn[:len(owned) * config.steps_per_case]

    return Stage(model, CachedViewsStep(model), groups, step, order, len(owned) * config.steps_per_case,
                 lambda: validate(model, cases.val, device, amp, val_cache))


def _reconstruction_parameters(model: Random25DUNet) -> list[torch.nn.Parameter]:
    """F's taps and the explained reconstruction's margin and softness."""
    explained = list(model.explanation.parameters()) if model.explanation is not None else []
    return [*model.filtration.parameters(), *explained]


@torch.no_grad()
def view_cache(model: Random25DUNet, cases: list[PreparedCase], device, amp: bool, quiet: bool = False
               ) -> list[tuple]:
    """U's probabilities of every volume at all ``m`` directions, computed once and kept on ``device``, with the
    image's own views when the reconstruction needs them: ``[(probabilities (1, K, m, D, S), image_views
    (1, 1, m, D, S) | None)]`` (:meth:`~vol25d.model.Random25DUNet.all_view_probabilities`); with progress
    (cases ``i/N``, ETA) unless ``quiet``."""
    cached = []
    for case in track(cases, "path2: U's views of every case", logger=log, quiet=quiet):
        with autocast(device, amp):
            cached.append(model.all_view_probabilities(case.image[None].to(device)))
    return cached


class CachedViewsStep(torch.nn.Module):
    """Path 2's training forward, T ∘ R ∘ F on U's cached views, as a module so that DDP can wrap it.

    U's weights need no gradient, so DDP leaves them out of its all-reduce; F and T are used at every step,
    so it needs no ``find_unused_parameters`` (and its extra pass over the graph).
    """

    def __init__(self, model: Random25DUNet):
        super().__init__()
        self.model = model

    def forward(self, cached: tuple, image: torch.Tensor) -> torch.Tensor:
        """``cached``: one entry of :func:`view_cache`; ``image`` ``(1, C, D, H, W)`` on its device."""
        probabilities, image_views = cached
        return self.model.segment_from_views(probabilities, image, image_views)


def _dice_per_class(prediction: torch.Tensor, reference: torch.Tensor) -> list[float]:
    """Dice of each class of boolean ``(K, D, H, W)`` maps (1 where both are empty)."""
    overlap = (prediction & reference).flatten(1).sum(1).double()
    total = prediction.flatten(1).sum(1).double() + reference.flatten(1).sum(1).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total)).tolist()


@torch.no_grad()
def validate(model: Random25DUNet, cases: list[PreparedCase], device, amp: bool, cache=None) -> float:
    """Mean Dice over the classes of ``cases`` at threshold 0.5, all ``m`` directions (from ``cache``, path 2's
    views of the same cases, when given); NaN without cases."""
    if not cases:
        return float("nan")
    model.eval()
    scores = []
    for i, case in enumerate(cases):
        image = case.image[None].to(device)
        with autocast(device, amp):
            if cache is not None:
                probabilities, image_views = cache[i]
                output = model.segment_from_views(probabilities, image, image_views)
            else:
                output = model(image)
        scores.extend(_dice_per_class(output[0].float() >= 0.5, case.label.to(device).bool()))
    return float(sum(scores) / len(scores))

"""The loss of both paths (:class:`Objective`) and the learning-rate schedule (:func:`lr_schedule`)."""

from __future__ import annotations

import math

import torch
from monai.losses import DiceLoss

from vol25d.device import full_precision
from vol25d.train.config import TrainConfig

__all__ = ["Objective", "lr_schedule", "warmup_cosine"]


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
        return _cosine((step - warmup) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_cosine(progress: float, warmup: float = 0.05) -> float:
    """:func:`lr_schedule`'s factor as a function of the fraction ``progress`` ∈ [0, 1] of training done (for a
    schedule by elapsed time rather than steps): linear warm-up over the first ``warmup``, then cosine to 0."""
    if progress < warmup:
        return progress / warmup
    return _cosine((progress - warmup) / (1 - warmup))


def _cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

"""Every setting of vol25d, its defaults and its rules, in one module without torch.

- The settings: :class:`ModelConfig` (saved with the model), :class:`PreprocessConfig` (saved with the model,
  planned from the data), :class:`TrainConfig` (one training path) with its :class:`AugmentConfig`, and the
  defaults the CLI states in its help (:data:`DEFAULT_EPOCHS`, :data:`DEFAULT_LR`, :data:`FINE_TUNE_LR`,
  :data:`DEFAULT_MAX_VOXELS`, :data:`DEFAULT_VIEW_CHUNK`).
- The ``--config`` file: :func:`read_config_file` reads a YAML file (or a run folder's ``config.yaml``) into
  the sections ``train``, ``model``, ``preprocess``, ``augment``, each of known settings of the right type.
- The rules of where a training path starts (:func:`check_start`): path 2 starts from a path-1 checkpoint and
  keeps its model settings; ``init`` keeps the preprocessing and projection of its checkpoint; path 1 resumes
  or starts from ``init``, not both. :func:`training_settings` merges the defaults, a file and explicit values
  (``vol25d train``'s flags) under those rules; :func:`vol25d.train.train` applies :func:`check_start` before
  anything else, so a notebook meets the same rules, in the same words, as ``vol25d train``.

Every bad setting is an :class:`~vol25d.errors.InputError` of one sentence. This module imports the standard
library and PyYAML only, so ``vol25d --help`` states these defaults without loading torch; the classes are
re-exported where they are used (:mod:`vol25d.model`, :mod:`vol25d.train`, :mod:`vol25d.data.preprocess`,
:mod:`vol25d.data.augment`). It is one module, longer than most, so that everything it holds stays torch-free
together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import yaml

from vol25d.errors import InputError

__all__ = [
    "AugmentConfig", "PreprocessConfig", "ModelConfig", "TrainConfig", "TrainingSettings", "DEFAULT_EPOCHS",
    "DEFAULT_LR", "FINE_TUNE_LR", "FINE_TUNE_MODEL_SETTINGS", "DEFAULT_MAX_VOXELS", "MIN_SIZE", "DEFAULT_VIEW_CHUNK",
    "RUNTIME_SETTINGS", "ROTATION_AXES", "PROJECTIONS", "check_memory_controls", "config_sections",
    "read_config_file", "check_start", "model_settings_asked", "training_settings",
]

# For each rotation axis (PreprocessConfig.rotation_axis): which RAS axis becomes D, H, W
# (vol25d.data.orientation).
ROTATION_AXES: dict[str, tuple[int, int, int]] = {"SI": (2, 1, 0), "AP": (1, 2, 0), "LR": (0, 2, 1)}

# The voxel cap of CPU training: 128³ ≈ 2.1 M voxels keeps a path-1 step around a second on two cores and the
# demo in minutes. On a GPU, ``vol25d train`` plans the cap from the device's memory instead
# (:mod:`vol25d.capacity`); ``0`` means no cap.
DEFAULT_MAX_VOXELS = 128**3
MIN_SIZE = 8  # every axis is padded to at least this many voxels (the U-Net's downsampling needs some room)


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings: stored in the run folder and the checkpoint (``to_dict``), so predict repeats them.

    Attributes:
        target_spacing_mm: voxel size ``(D, H, W)`` in mm with ``H == W``; ``None`` keeps each image's native
            ``D`` spacing and resamples ``H, W`` to the finer of the two in-plane spacings.
        spacing_tolerance: an image whose own spacing is within this relative difference of the target on
            every axis (and equal along ``H`` and ``W``) keeps its native grid, since resampling a vessel one or
            two voxels thin and back blurs it away (docs/method.md, "Images close to the training spacing keep
            their own grid"). ``0`` always resamples (nnU-Net's rule); the voxel cap applies either way.
        max_voxels: cap on ``D·H·W`` per image (after padding to ≥ 8); a larger image gets a uniformly
            coarser spacing. ``0``: no cap. Enforced at training and prediction time alike, so a checkpoint
            predicts on the grid it was trained on, whatever the machine.
        normalization: ``"percentile"`` (clip to the image's body percentiles and scale to [0, 1]) or
            ``"zscore"`` (body mean 0, std 1). Both per image and per channel, so ``a·x + b`` (a > 0) gives the
            same tensor: models transfer across scanners and phantom generators.
        percentiles: the clip percentiles of ``"percentile"`` normalisation.
        crop_foreground: crop to the body's bounding box (plus 5 mm) before resampling.
        n4: N4 bias-field correction (SimpleITK), done on the resampled grid where it is cheap.
        rotation_axis: ``"SI"``, ``"AP"`` or ``"LR"``: the anatomical axis that becomes ``D``.
        intensity_stats: per channel ``(p_low, p_high, median, mean, std)`` of the training images' body
            voxels in raw units (``plan_preprocessing``); a record of the training data, not used by the
            per-image normalisation, checked only for the channel count.
        planned_shape: ``(D, H, W)`` of the median training image (its median extent) at the target spacing,
            as planned; a record, ``None`` in settings saved before it existed.
    """

    target_spacing_mm: tuple[float, float, float] | None = None
    spacing_tolerance: float = 0.5
    max_voxels: int = DEFAULT_MAX_VOXELS
    normalization: str = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)
    crop_foreground: bool = True
    n4: bool = False
    rotation_axis: str = "SI"
    intensity_stats: tuple[tuple[float, ...], ...] = ()
    planned_shape: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise lists from JSON to tuples with object.__setattr__.
        if self.target_spacing_mm is not None:
            spacing = tuple(float(s) for s in self.target_spacing_mm)
            if len(spacing) != 3 or min(spacing) <= 0 or not math.isclose(spacing[1], spacing[2], rel_tol=1e-6):
                raise InputError(
                    f"target_spacing_mm must be three positive (D, H, W) spacings with H == W; got {spacing}"
                )
            object.__setattr__(self, "target_spacing_mm", spacing)
        if not 0.0 <= float(self.spacing_tolerance) < 1.0:
            raise InputError(f"spacing_tolerance must be in [0, 1); got {self.spacing_tolerance}")
        object.__setattr__(self, "spacing_tolerance", float(self.spacing_tolerance))
        if isinstance(self.max_voxels, bool) or int(self.max_voxels) != self.max_voxels or (
                self.max_voxels != 0 and int(self.max_voxels) < MIN_SIZE**3):
            raise InputError(f"max_voxels must be 0 (no cap) or a whole number ≥ {MIN_SIZE**3}; got {self.max_voxels!r}")
        if self.planned_shape is not None:
            object.__setattr__(self, "planned_shape", tuple(int(n) for n in self.planned_shape))
        if self.normalization not in ("percentile", "zscore"):
            raise InputError(f"normalization must be 'percentile' or 'zscore'; got {self.normalization!r}")
        low, high = (float(p) for p in self.percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise InputError(f"percentiles must satisfy 0 ≤ low < high ≤ 100; got {self.percentiles}")
        if self.rotation_axis not in ROTATION_AXES:
            raise InputError(f"rotation_axis must be one of {sorted(ROTATION_AXES)}; got {self.rotation_axis!r}")
        object.__setattr__(self, "max_voxels", int(self.max_voxels))
        object.__setattr__(self, "percentiles", (low, high))
        object.__setattr__(self, "intensity_stats", tuple(tuple(float(v) for v in c) for c in self.intensity_stats))

    def to_dict(self) -> dict:
        """JSON-able dict (lists for tuples)."""
        return {k: (list(map(list, v)) if k == "intensity_stats" else list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a checkpoint from another version)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"preprocessing settings have unknown keys {sorted(unknown)}; expected "
                             f"{[f.name for f in fields(cls)]}")
        # Settings saved before spacing_tolerance existed were always resampled: predict as they trained.
        return cls(**{"spacing_tolerance": 0.0, **data})


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations. Probabilities are per sample of the batch.

    Attributes:
        enabled: ``False`` makes :func:`~vol25d.data.augment.augment` return its inputs unchanged.
        flip_prob_dhw: probability of mirroring along ``D``, ``H`` and ``W`` (nnU-Net mirrors all axes).
        affine_prob: probability of the random affine below.
        rotate_d_deg: rotation about ``D`` (in the ``H, W`` plane) drawn from ``±rotate_d_deg``.
        tilt_deg: rotations about ``H`` and ``W`` drawn from ``±tilt_deg`` (small: ``D`` is anisotropic).
        scale_range: isotropic zoom factor range. Wide on purpose: vessels are as thick in voxels as the
            scan's resolution makes them, and a model trained on 48³ phantoms with ±10 % zooms
            under-segmented 96³ ones (Dice 0.49 and 0.45 on vol25d's and another generator's); with zooms
            of 0.6–1.6 in 70 % of steps, 0.61 and 0.59, at the same Dice on 48³ (0.60)
            (experiments/results/tuning.md).
        intensity_prob: probability of ``x·s + t`` with ``s ∈ intensity_scale`` and ``t ∈ ±intensity_shift``
            times the sample's standard deviation.
        gamma_prob, gamma_range: probability and range of ``x ↦ x^γ`` on the sample's min–max range.
        noise_prob, noise_std: probability of Gaussian noise with σ drawn from ``[0, noise_std]`` times the
            sample's standard deviation.
        bias_prob, bias_strength: probability of a smooth multiplicative field (a random polynomial of order
            3 in the normalised coordinates, as a receive coil's sensitivity) applied above the sample's
            minimum; its log spans ``±bias_strength`` times a draw from ``[0.5, 1]``. Off by default.
    """

    enabled: bool = True
    flip_prob_dhw: tuple[float, float, float] = (0.5, 0.5, 0.5)
    affine_prob: float = 0.7
    rotate_d_deg: float = 15.0
    tilt_deg: float = 5.0
    scale_range: tuple[float, float] = (0.6, 1.6)
    intensity_prob: float = 0.3
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.1
    gamma_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.15
    noise_std: float = 0.1
    bias_prob: float = 0.0
    bias_strength: float = 0.4

    def __post_init__(self) -> None:
        for name in ("affine_prob", "intensity_prob", "gamma_prob", "noise_prob", "bias_prob", "flip_prob_dhw"):
            value = getattr(self, name)
            values = value if isinstance(value, (tuple, list)) else (value,)
            if not all(0.0 <= float(v) <= 1.0 for v in values):
                raise InputError(f"augmentation {name} must be probabilities in [0, 1]; got {value}")
        for name in ("scale_range", "intensity_scale", "gamma_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise InputError(f"augmentation {name} must be (low, high) with 0 < low ≤ high; got {(low, high)}")
            object.__setattr__(self, name, (float(low), float(high)))
        if not self.bias_strength >= 0:
            raise InputError(f"augmentation bias_strength must be ≥ 0 (the largest log of the field); "
                             f"got {self.bias_strength}")
        object.__setattr__(self, "flip_prob_dhw", tuple(float(p) for p in self.flip_prob_dhw))

    def to_dict(self) -> dict:
        """JSON-able dict (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"augmentation settings have unknown keys {sorted(unknown)}")
        return cls(**data)


PROJECTIONS = ("mip", "sum")
# The kernels of vol25d.ops (VOL25D_OPS_BACKEND, --ops-backend): vol25d.ops.backend says what each runs.
OPS_BACKENDS = ("auto", "triton", "cpu", "reference")
_ACTIVATIONS = ("sigmoid", "softmax")
_HEAD_NORMS = ("affine", "instance")
_HEAD_POOLS = ("none", "avg", "learned")
_FILTER_INITS = ("identity", "ramlak")
_RECONSTRUCTIONS = ("seed", "image")


# Memory controls, arguments of the model (and of training and prediction) rather than settings saved with it:
# views pushed through U at once outside training, and views per activation-checkpointed chunk in training.
RUNTIME_SETTINGS = ("view_chunk", "checkpoint_views")
DEFAULT_VIEW_CHUNK = 16


def check_memory_controls(view_chunk: int, checkpoint_views: int) -> None:
    """``view_chunk`` ≥ 1 and ``checkpoint_views`` ≥ 0, whole numbers; else ``InputError`` naming the setting."""
    for name, value, least in (("view_chunk", view_chunk, 1), ("checkpoint_views", checkpoint_views, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"{name} must be an integer ≥ {least}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Settings of :class:`~vol25d.model.Random25DUNet` (saved in every checkpoint).

    Attributes:
        in_channels: image channels ``C``.
        out_channels: foreground classes ``K`` (one output channel each).
        directions: ``m``, equally spaced directions in ``[0, π)`` used at inference and in path 2.
        views: ``p``, directions drawn at random per training step in path 1.
        projection: ``"mip"`` (maximum intensity) or ``"sum"`` (the Radon transform).
        channels, strides, num_res_units: MONAI ``UNet`` of the views.
        filter_radius: the learnable filtration has ``2·filter_radius + 1`` taps along the detector; default
            8 for the identity start (a local sharpening), 96 for Ram–Lak (the ramp must reach across the
            detector).
        filter_init: F's starting kernel: ``"identity"`` (the default: ``R ∘ F`` starts as the mean of the
            views over the directions, the fraction of views whose ray through a voxel meets the object) or
            ``"ramlak"`` (the Ram–Lak ramp, exact for sum projections, the seed method's). Why the identity:
            docs/method.md, "F starts as the identity".
        filter_fixed_dc: keep F's DC gain (its taps' sum) at its starting value, so training shapes the filter
            but not its level, which the head's affine sets (docs/method.md says what a free DC gain did).
        activation: ``"sigmoid"`` (one probability per class, classes may overlap) or ``"softmax"``
            (exclusive classes, with an implicit background logit of 0).
        head_norm: ``"affine"`` (per-class ``γ·r + β``, the default) or ``"instance"`` (instance norm with
            affine).
        head_pool: T's 3-D smoothing: ``"none"`` (the default), ``"avg"`` (3×3×3 average pooling, as the seed
            method) or ``"learned"`` (a 3×3×3 per-class convolution initialised to that average); why none:
            docs/method.md, "T has no 3-D smoothing".
        head_image: T also reads the image: a 3×3×3 convolution of ``[R ∘ F, image]`` (every class of the
            reconstruction and every image channel in, one correction per class out, starting at zero) is added
            to the reconstruction before T's normalisation, so T can weigh each voxel by its own intensity and its
            neighbours' (a vessel's rim against its background) where the views' back-projection cannot tell
            them apart. One layer, no 3-D stack: memory stays the volume's. ``False`` is T as before (and what
            checkpoints written before this setting load as); what it changed: docs/method.md, "T reads the image".
        reconstruction: ``"image"`` or ``"seed"``; ``None`` (the default) picks ``"image"`` for
            ``projection="mip"`` and ``"seed"`` for ``"sum"``. ``"seed"`` is the seed method's ``R ∘ F``: the
            filtered views back-projected along whole rays, whose best with perfect views is the visual hull.
            ``"image"`` is the explained back-projection (:func:`~vol25d.ops.backproject_explained`): each
            view's probability goes to a voxel in proportion to ``σ((x - V̂ + margin) / s)``, how close the
            voxel's own intensity ``x`` is to the view's MIP value ``V̂`` at its detector position; ``margin``
            and ``s`` learnable per class. It needs ``projection="mip"``; the image's first channel is the one
            compared. Why it is the default: docs/method.md, "The reconstruction uses the image". Checkpoints
            written before it was keep the reconstruction they were trained with.

    Memory controls are not model settings: ``view_chunk`` and ``checkpoint_views`` are arguments of
    :class:`~vol25d.model.Random25DUNet` (and of training and prediction), so a model trained with one may
    run with another.
    """

    in_channels: int = 1
    out_channels: int = 1
    directions: int = 64
    views: int = 8
    projection: Literal["mip", "sum"] = "mip"
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 2
    filter_radius: int | None = None
    filter_init: Literal["identity", "ramlak"] = "identity"
    filter_fixed_dc: bool = True
    activation: Literal["sigmoid", "softmax"] = "sigmoid"
    head_norm: Literal["affine", "instance"] = "affine"
    head_pool: Literal["none", "avg", "learned"] = "none"
    head_image: bool = True
    reconstruction: Literal["seed", "image"] | None = None

    def __post_init__(self):
        if self.filter_radius is None:
            object.__setattr__(self, "filter_radius", 96 if self.filter_init == "ramlak" else 8)
        for name in ("in_channels", "out_channels", "directions", "views", "filter_radius"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an integer ≥ 1; got {value!r}")
        if self.views > self.directions:
            raise InputError(f"views (p = {self.views}) must not exceed directions (m = {self.directions})")
        if self.projection not in PROJECTIONS:
            raise InputError(f"projection must be one of {PROJECTIONS}; got {self.projection!r}")
        if self.activation not in _ACTIVATIONS:
            raise InputError(f"activation must be one of {_ACTIVATIONS}; got {self.activation!r}")
        if self.head_norm not in _HEAD_NORMS:
            raise InputError(f"head_norm must be one of {_HEAD_NORMS}; got {self.head_norm!r}")
        if self.filter_init not in _FILTER_INITS:
            raise InputError(f"filter_init must be one of {_FILTER_INITS}; got {self.filter_init!r}")
        if self.reconstruction is None and self.projection in PROJECTIONS:
            object.__setattr__(self, "reconstruction", "image" if self.projection == "mip" else "seed")
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise InputError(f"reconstruction must be one of {_RECONSTRUCTIONS}; got {self.reconstruction!r}")
        if self.reconstruction == "image" and self.projection != "mip":
            raise InputError(f"reconstruction='image' compares voxels with their rays' maximum and needs "
                             f"projection='mip'; got projection={self.projection!r} (set reconstruction: seed for "
                             "sum projections, or leave it unset)")
        if self.head_pool not in _HEAD_POOLS:
            raise InputError(f"head_pool must be one of {_HEAD_POOLS}; got {self.head_pool!r}")
        if not isinstance(self.head_image, bool):
            raise InputError(f"head_image must be true or false; got {self.head_image!r}")
        if len(self.channels) != len(self.strides) + 1:
            raise InputError(
                f"channels needs one entry more than strides; got {len(self.channels)} channels and "
                f"{len(self.strides)} strides"
            )
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ModelConfig":
        """The settings of a dict; the memory controls that checkpoints written before they became runtime
        arguments carry (:data:`RUNTIME_SETTINGS`) are dropped."""
        values = {k: v for k, v in values.items() if k not in RUNTIME_SETTINGS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown model settings {unknown}; known: {sorted(known)}")
        return cls(**values)


# Model settings a fine-tuning run may change: none of them shapes a weight.
FINE_TUNE_MODEL_SETTINGS = ("directions", "views")
# U's peak learning rate when TrainConfig.lr is None (docs/method.md says why 3e-3).
DEFAULT_LR = 3e-3
# `vol25d train --path 1 --init CKPT` without --lr: a tenth of DEFAULT_LR, so that fine-tuning on a few
# cases of a new scanner adjusts the trained weights rather than starting over from them.
FINE_TUNE_LR = 3e-4
# Epochs of path 1 and path 2 when TrainConfig.epochs is None, by the device the path trains on. On the CPU,
# what trains 12 phantoms of 48³ (both paths) in minutes on two cores, where more epochs add little (the
# figures: docs/benchmarks.md, "CPU defaults across generators"); on a GPU, the long schedule.
DEFAULT_EPOCHS = {"cpu": {1: 20, 2: 5}, "cuda": {1: 100, 2: 100}}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training path (saved in ``config.yaml`` and the checkpoints).

    Attributes:
        path: 1 (random views, U trainable) or 2 (all views, U frozen, trains F and T).
        epochs: passes over the training cases; ``None`` (the default) takes :data:`DEFAULT_EPOCHS` of the path
            and of the device it trains on (:meth:`for_device`).
        steps_per_case: optimiser steps per training case per epoch (path 1: each on its own random views
            and augmentation; path 2: on the cached views of all ``m`` directions).
        lr: peak learning rate of AdamW for U (F and T use ``small_lr_factor`` × it in path 1; path 2 trains
            them at ``lr``); warm-up
            over the first 5 % of steps, then cosine decay to 0. Default 3e-3 (docs/method.md says why).
        weight_decay: AdamW's decoupled weight decay.
        loss: ``"dice+bce"`` (MONAI ``DiceLoss`` plus BCE on the 3-D output, the default: BCE keeps a gradient
            where Dice alone stalls; docs/method.md) or ``"dice"``.
        small_lr_factor: path 1's learning rate of F and T (and the explained reconstruction's margin and
            softness) as a multiple of U's: a handful of parameters, each with a scale of its own.
        view_loss_weight: weight of the auxiliary Dice of U's views against the label's MIPs (path 1 only).
        train_head_in_path1: whether T trains in path 1 too (it always trains in path 2).
        val_fraction: share of the cases held out for validation (split by case, seeded).
        amp: bf16 autocast on CUDA.
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"``.
        seed: seeds weights, the split, the order of cases, the drawn directions and the augmentation.
        augment: path-1 augmentation (path 2 trains on U's cached views; see ``path2_copies``).
        path2_copies: path 2 also caches U's views of this many augmented copies of every training case (path
            1's augmentation, drawn once with the run's seed) and trains on them beside the cases themselves,
            with the same number of steps per epoch; ``0`` (the default) trains on the cases alone. U fitted
            its training cases, so its views of them are cleaner than of cases it never saw; the copies give F
            and T views with errors like those at test time. Costs one pass of U per copy and its cache.
        view_chunk: views pushed through U at once when all ``m`` directions are used (validation, path 2's
            view cache): a memory control, not saved with the model.
        checkpoint_views: path 1: recompute U's activations in the backward over chunks of this many views
            (activation checkpointing; less memory, a second forward of U); ``0`` keeps them.
    """

    path: Literal[1, 2] = 1
    epochs: int | None = None
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
    path2_copies: int = 0

    def __post_init__(self):
        if self.path not in (1, 2):
            raise InputError(f"path must be 1 or 2; got {self.path!r}")
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise InputError(f"epochs must be a whole number ≥ 1 (or unset for the device's default); got {self.epochs!r}")
        if not self.small_lr_factor > 0:
            raise InputError(f"small_lr_factor must be > 0; got {self.small_lr_factor}")
        if self.steps_per_case < 1:
            raise InputError(f"steps_per_case must be ≥ 1; got {self.steps_per_case}")
        if isinstance(self.path2_copies, bool) or not isinstance(self.path2_copies, int) or self.path2_copies < 0:
            raise InputError(f"path2_copies must be a whole number ≥ 0; got {self.path2_copies!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be between 0 and 1; got {self.val_fraction}")
        if self.loss not in ("dice", "dice+bce"):
            raise InputError(f"loss must be 'dice' or 'dice+bce'; got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise InputError(f"device must be 'auto', 'cpu' or 'cuda'; got {self.device!r}")
        check_memory_controls(self.view_chunk, self.checkpoint_views)
        if self.lr is None:
            object.__setattr__(self, "lr", DEFAULT_LR)
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if self.path2_copies and not self.augment.enabled:
            raise InputError(f"path2_copies = {self.path2_copies} needs the augmentation on (augment: enabled), "
                             "since unaugmented copies are the cases themselves; turn it on or set path2_copies to 0")

    def for_device(self, device) -> TrainConfig:
        """This config with its epochs set: as given, else :data:`DEFAULT_EPOCHS` of the path on ``device``'s
        type (``"cuda"`` or ``"cpu"``; a ``torch.device`` or its name)."""
        if self.epochs is not None:
            return self
        kind = "cuda" if str(device).startswith("cuda") else "cpu"
        return dataclasses.replace(self, epochs=DEFAULT_EPOCHS[kind][self.path])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingSettings:
    """The settings of one training run, as :func:`vol25d.train.train` takes them.

    Attributes:
        train: the path's :class:`TrainConfig` (with its :class:`AugmentConfig`).
        model: the model settings of path 1; ``None``: the defaults (or, with ``init``, the checkpoint's).
        preprocess: :class:`PreprocessConfig` fields to fix; ``None``: all planned from the data.
    """

    train: TrainConfig
    model: ModelConfig | None
    preprocess: dict | None


def config_sections() -> dict[str, dict[str, dataclasses.Field]]:
    """The settings each section of a ``--config`` file may hold: the fields of the dataclass it fills."""

    def names(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    return {
        # --path picks the path and augment is its own section; the channels come from the data; the
        # intensity statistics (and the planned grid) are measured on the training images.
        section: {k: v for k, v in names(cls).items() if k not in drop}
        for section, cls, drop in (("train", TrainConfig, {"path", "augment"}),
                                   ("model", ModelConfig, {"in_channels", "out_channels"}),
                                   ("preprocess", PreprocessConfig, {"intensity_stats", "planned_shape"}),
                                   ("augment", AugmentConfig, set()))
    }


def read_config_file(path: str | Path | None, run_path: int | None = None) -> dict:
    """Sections ``train``, ``model``, ``preprocess``, ``augment`` of a YAML config file, each a mapping of
    known settings (see ``experiments/configs/example.yaml``); or, from a run folder's ``config.yaml``, the
    settings its path ``run_path`` ran with (:func:`_settings_of_run`). ``None``: every section empty."""
    sections = config_sections()
    if path is None:
        return {section: {} for section in sections}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist; pass a YAML file with train/model/preprocess sections")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))  # YAML is UTF-8
    except yaml.YAMLError as error:
        raise InputError(f"{file} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    except (UnicodeDecodeError, OSError) as error:
        raise InputError(f"{file} cannot be read as a text file ({type(error).__name__}); pass a YAML file") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise InputError(f"{file}: the top level must be a mapping with sections {', '.join(sections)}; got "
                         f"{type(values).__name__} {str(values)[:40]!r} — see experiments/configs/example.yaml")
    from vol25d.checkpoint import RunFolder  # it owns a run's record; a file is read to train, which loads torch anyway

    if RunFolder.is_record(values):
        values = _settings_of_run(values, file, run_path, sections)
    unknown = sorted(map(str, set(values) - set(sections)))
    if unknown:
        raise InputError(f"{file}: top-level keys must be among {', '.join(sections)}; got {unknown}")
    for section, known in sections.items():
        settings = values.get(section)
        if settings is None:
            values[section] = {}
            continue
        if not isinstance(settings, dict):
            raise InputError(f"{file}: section {section!r} must be a mapping of settings; got {type(settings).__name__} "
                             f"{str(settings)[:40]!r}")
        bad = sorted(map(str, set(settings) - set(known)))
        moved = sorted(set(bad) & set(RUNTIME_SETTINGS)) if section == "model" else []
        if moved:
            raise InputError(f"{file}: {', '.join(moved)} are memory controls of training, not model settings; move "
                             "them to the train section")
        if bad:
            raise InputError(f"{file}: unknown setting(s) {bad} in section {section!r}; known: {', '.join(sorted(known))}")
        for key, value in settings.items():
            expected = _expected_type(known[key])
            if expected and value is not None and not _is_a(value, expected[0]):
                raise InputError(f"{file}: {section}.{key} must be {expected[1]}; got {value!r}")
    return values


def _settings_of_run(record: dict, file: Path, run_path: int | None, sections: dict) -> dict:
    """A run folder's ``config.yaml`` → the known settings of the sections ``--config`` reads, as path
    ``run_path`` ran with them (:meth:`vol25d.checkpoint.RunFolder.settings`), so the same command re-runs it."""
    from vol25d.checkpoint import RunFolder

    values = RunFolder.settings(record, run_path, file)
    return {section: {k: v for k, v in values[section].items() if k in sections[section]} for section in sections}


def _expected_type(setting) -> tuple[tuple[type, ...], str] | None:
    """The YAML types a setting (a dataclass field) accepts, and how to say it; ``None``: not checked here.

    A setting whose default is ``None`` ("the device's", "planned") is checked by its annotation's first type
    (``int | None``: a whole number)."""
    default = setting.default
    if default is None:
        default = {"int": 0, "float": 0.0}.get(str(setting.type).split("|")[0].strip())
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "a whole number"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, str):
        return (str,), "a word"
    if isinstance(default, tuple):
        return (list, tuple), "a list, e.g. [1, 2]"
    return None


def _is_a(value, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def check_start(path: int, *, init: str | Path | None = None, resume: bool = False, model: Iterable[str] = (),
                preprocess: Iterable[str] = ()) -> None:
    """The rules of where training path ``path`` starts; an :class:`InputError` of one sentence for the first
    one broken.

    ``model`` and ``preprocess`` are the names of the model and preprocessing settings asked for (the keys
    given, or :func:`model_settings_asked` of a :class:`ModelConfig`).

    - Path 2 starts from a path-1 checkpoint (``init``) and keeps its model settings: it may ask for none.
    - Path 1 continues its ``path1_last.pt`` (``resume``) or starts from ``init``, not both (path 2 resumes
      with its ``init``, whose preprocessing it keeps).
    - ``init`` keeps the preprocessing and the projection of its checkpoint. Which other model settings
      fine-tuning keeps (all but :data:`FINE_TUNE_MODEL_SETTINGS`) depends on the checkpoint's own, so
      :mod:`vol25d.train.start` checks them once it is read.
    """
    if path not in (1, 2):
        raise InputError(f"path must be 1 or 2; got {path!r}")
    if path == 2 and init is None:
        raise InputError("path 2 starts from a path-1 checkpoint: pass --init RUN/path1.pt")
    if path == 1 and init is not None and resume:
        raise InputError("--resume continues RUN/pathN_last.pt and --init starts from another model; pass one of them")
    model = sorted(set(model) - {"in_channels", "out_channels"})  # always the data's
    if path == 2 and model:
        raise InputError(f"path 2 keeps the model settings of its --init checkpoint {init}; drop {', '.join(model)}")
    kept = sorted(set(preprocess)) + [name for name in model if name == "projection"]
    if init is not None and kept:
        raise InputError(f"--init keeps the preprocessing and projection of {init}; drop {', '.join(kept)}")


def model_settings_asked(config: ModelConfig | None) -> list[str]:
    """The settings of ``config`` that differ from :class:`ModelConfig`'s defaults (the channels aside): what
    a :class:`ModelConfig` passed to :func:`vol25d.train.train` asks for."""
    if config is None:
        return []
    given, default = config.to_dict(), ModelConfig().to_dict()
    return [k for k, v in given.items() if v != default[k] and k not in ("in_channels", "out_channels")]


def training_settings(path: int, *, config_file: str | Path | None = None, train: dict | None = None,
                      model: dict | None = None, preprocess: dict | None = None, augment: dict | None = None,
                      init: str | Path | None = None, resume: bool = False) -> TrainingSettings:
    """The settings of training path ``path`` as ``vol25d train`` merges them: the defaults, then the sections
    of ``config_file`` (:func:`read_config_file`), then the values of ``train``, ``model``, ``preprocess`` and
    ``augment`` (its flags); checked by :func:`check_start` before any is built.

    Path 1 with ``init`` and no learning rate given trains at :data:`FINE_TUNE_LR`. A bad value is an
    :class:`InputError` naming ``config_file`` when there is one.
    """
    check_start(path, init=init, resume=resume)
    file = read_config_file(config_file, path)
    given = {section: {**file[section], **(values or {})}
             for section, values in (("train", train), ("model", model), ("preprocess", preprocess),
                                     ("augment", augment))}
    check_start(path, init=init, resume=resume, model=given["model"], preprocess=given["preprocess"])
    train_values = dict(given["train"])
    if path == 1 and init is not None and train_values.get("lr") is None:
        train_values["lr"] = FINE_TUNE_LR
    source = config_file or "the arguments"
    try:
        config = TrainConfig(**{**train_values, "path": path, "augment": AugmentConfig(**given["augment"])})
        model_config = ModelConfig.from_dict(given["model"]) if given["model"] else None
        PreprocessConfig(**given["preprocess"])  # checked now, not after the images are read
    except InputError as error:
        raise InputError(f"{config_file}: {error}" if config_file else str(error)) from None
    except (TypeError, ValueError) as error:  # the dataclasses' own checks: an unknown or mistyped setting
        raise InputError(f"bad setting in {source}: {error}") from None
    return TrainingSettings(config, model_config, dict(given["preprocess"]) or None)

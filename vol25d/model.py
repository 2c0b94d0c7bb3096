"""The random 2.5D U-Net: projection M → 2D U-Net U → filtration F → back-projection R → fine-tuning head T.

Imports torch and monai only, so a GPU machine needs nothing else to run it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch.utils.checkpoint import checkpoint

from vol25d.device import full_precision
from vol25d.geometry import default_detector, equal_angles
from vol25d.ops import backproject, backproject_explained, filter_views, mip, project, ramp_filter

__all__ = ["ModelConfig", "Random25DUNet", "ViewUNet", "Filtration", "Explanation", "Head", "RUNTIME_SETTINGS",
           "DEFAULT_VIEW_CHUNK", "check_memory_controls", "conv3x3x3"]

_PROJECTIONS = ("mip", "sum")
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
    """``view_chunk`` ≥ 1 and ``checkpoint_views`` ≥ 0, whole numbers; else ``ValueError`` naming the setting."""
    for name, value, least in (("view_chunk", view_chunk, 1), ("checkpoint_views", checkpoint_views, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Settings of :class:`Random25DUNet` (saved in every checkpoint).

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
            ``"ramlak"`` (the Ram–Lak ramp, exact for sum projections). U's views are silhouettes, not line
            integrals: with the same trained U on held-out phantoms, thresholding the plain mean at one
            threshold for all cases gave Dice 0.48–0.51 per case where the Ram–Lak reconstruction gave
            0.41–0.48 and the trained Ram–Lak filtration 0.31–0.46, and the ramp's negative lobes sent whole
            cases to an empty mask when U over-segmented (experiments/results/tuning.md).
        filter_fixed_dc: keep F's DC gain (its taps' sum) at its starting value, so training shapes the filter
            but not its level, which the head's affine sets. Measured: a 193-tap F trained on 48³ phantoms
            grew tails summing to −13.5, which subtract the amount of vessel seen along the detector; on
            96³ phantoms every vessel voxel then reconstructed negative and the output was empty (Dice
            0.00–0.01). Truncated to 17 taps with the DC gain held at 1, the same weights gave 0.48–0.62.
        activation: ``"sigmoid"`` (one probability per class, classes may overlap) or ``"softmax"``
            (exclusive classes, with an implicit background logit of 0).
        head_norm: ``"affine"`` (per-class ``γ·r + β``) or ``"instance"`` (instance norm with affine).
            Measured (experiments/results/tuning.md): affine trains faster and higher.
        head_pool: T's 3-D smoothing: ``"none"`` (the default), ``"avg"`` (3×3×3 average pooling, as the seed
            method) or ``"learned"`` (a 3×3×3 per-class convolution initialised to that average). On the
            phantoms the average blurs sub-voxel vessels away: with perfect views the best Dice drops from
            0.79 to 0.53, and trained end to end ``"none"`` reached 0.41 validation Dice where ``"learned"``
            reached 0.39 and, with Dice loss alone, 0.06 (experiments/results/tuning.md).
        head_image: T also reads the image: a 3×3×3 convolution of ``[R ∘ F, image]`` (every class of the
            reconstruction and every image channel in, one correction per class out, starting at zero) is added
            to the reconstruction before T's normalisation, so T can weigh each voxel by its own intensity and its
            neighbours' (a vessel's rim against its background) where the views' back-projection cannot tell
            them apart. One layer, no 3-D stack: memory stays the volume's. ``False`` is T as before (and what
            checkpoints written before this setting load as). See :class:`Head` for what it measured.
        reconstruction: ``"image"`` or ``"seed"``; ``None`` (the default) picks ``"image"`` for
            ``projection="mip"`` and ``"seed"`` for ``"sum"``. ``"seed"`` is the seed method's ``R ∘ F``: the
            filtered views back-projected along whole rays, whose best with perfect views is the visual hull.
            ``"image"`` is the explained back-projection (:func:`~vol25d.ops.backproject_explained`): each
            view's probability goes to a voxel in proportion to ``σ((x - V̂ + margin) / s)``, how close the
            voxel's own intensity ``x`` is to the view's MIP value ``V̂`` at its detector position; ``margin``
            and ``s`` learnable per class. It needs ``projection="mip"``; the image's first channel is the one
            compared. Trained alike (same U, epochs and data; 3 seeds) it scored higher on held-out vol25d
            phantoms (0.830 against 0.584), ``experiments/other_phantoms.py``'s (0.541 against 0.473) and the
            GI-tract-like phantoms (experiments/results/gi_reconstruction.md), although its perfect-view
            ceiling there is a little lower (0.88 against 0.90, experiments/results/ceiling_gi.md): hence the
            default. Checkpoints written before it was keep the reconstruction they were trained with.

    Memory controls are not model settings: ``view_chunk`` and ``checkpoint_views`` are arguments of
    :class:`Random25DUNet` (and of training and prediction), so a model trained with one may run with another.
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
                raise ValueError(f"{name} must be an integer ≥ 1; got {value!r}")
        if self.views > self.directions:
            raise ValueError(f"views (p = {self.views}) must not exceed directions (m = {self.directions})")
        if self.projection not in _PROJECTIONS:
            raise ValueError(f"projection must be one of {_PROJECTIONS}; got {self.projection!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}; got {self.activation!r}")
        if self.head_norm not in _HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {_HEAD_NORMS}; got {self.head_norm!r}")
        if self.filter_init not in _FILTER_INITS:
            raise ValueError(f"filter_init must be one of {_FILTER_INITS}; got {self.filter_init!r}")
        if self.reconstruction is None and self.projection in _PROJECTIONS:
            object.__setattr__(self, "reconstruction", "image" if self.projection == "mip" else "seed")
        if self.reconstruction not in _RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {_RECONSTRUCTIONS}; got {self.reconstruction!r}")
        if self.reconstruction == "image" and self.projection != "mip":
            raise ValueError(f"reconstruction='image' compares voxels with their rays' maximum and needs "
                             f"projection='mip'; got projection={self.projection!r} (set reconstruction: seed for "
                             "sum projections, or leave it unset)")
        if self.head_pool not in _HEAD_POOLS:
            raise ValueError(f"head_pool must be one of {_HEAD_POOLS}; got {self.head_pool!r}")
        if not isinstance(self.head_image, bool):
            raise ValueError(f"head_image must be true or false; got {self.head_image!r}")
        if len(self.channels) != len(self.strides) + 1:
            raise ValueError(
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
            raise ValueError(f"unknown model settings {unknown}; known: {sorted(known)}")
        return cls(**values)


class ViewUNet(nn.Module):
    """MONAI's 2D ``UNet`` applied to every view; views are padded to a size it accepts and cropped back.

    Returns logits ``(B, K, p, D, S)`` for views ``(B, C, p, D, S)``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.net = UNet(
            spatial_dims=2,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
        )
        self.multiple = math.prod(config.strides)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        batch, channels, count, depth, detector = views.shape
        images = views.transpose(1, 2).reshape(batch * count, channels, depth, detector)
        pad_d = -depth % self.multiple
        pad_s = -detector % self.multiple
        if pad_d or pad_s:
            images = F.pad(images, (pad_s // 2, pad_s - pad_s // 2, pad_d // 2, pad_d - pad_d // 2), mode="replicate")
        logits = self.net(images)
        logits = logits[..., pad_d // 2 : pad_d // 2 + depth, pad_s // 2 : pad_s // 2 + detector]
        return logits.reshape(batch, count, -1, depth, detector).transpose(1, 2)


class Filtration(nn.Module):
    """F: a learnable 1-D convolution along the detector, one kernel per class, initialised to the identity
    (a centred unit tap) or to the Ram–Lak ramp (:func:`~vol25d.ops.ramp_filter`), with which
    ``R(F(P x)) ≈ x`` for sum projections."""

    def __init__(self, classes: int, radius: int, init: str = "identity", fixed_dc: bool = True):
        super().__init__()
        kernel = ramp_filter(radius + 1) if init == "ramlak" else F.one_hot(torch.tensor(radius), 2 * radius + 1).float()
        self.kernel = nn.Parameter(kernel.repeat(classes, 1))
        self.fixed_dc = fixed_dc
        # The starting DC gain per class: derived from the settings, so not part of the state dict.
        self.register_buffer("dc_gain", kernel.sum().repeat(classes), persistent=False)

    def effective_kernel(self) -> torch.Tensor:
        """The taps applied: the parameter, shifted evenly so that its sum stays ``dc_gain`` when ``fixed_dc``."""
        if not self.fixed_dc:
            return self.kernel
        return self.kernel + (self.dc_gain - self.kernel.sum(dim=1))[:, None] / self.kernel.shape[1]

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return filter_views(views, self.effective_kernel())


class Explanation(nn.Module):
    """The learnable part of the explained back-projection: per class a ``margin`` and a softness
    ``s = exp(log_softness)`` (positive by construction). Starts at ``margin = 0.1``, ``s = 0.3``, where the
    perfect-view ceiling of both phantom generators is within 0.01 of its best (experiments/results/
    ceiling.md), for images normalised to about ``[0, 1]``."""

    def __init__(self, classes: int, margin: float = 0.1, softness: float = 0.3):
        super().__init__()
        self.margin = nn.Parameter(torch.full((classes,), float(margin)))
        self.log_softness = nn.Parameter(torch.full((classes,), math.log(softness)))

    def forward(self, views: torch.Tensor, image_views: torch.Tensor, image: torch.Tensor,
                angles: torch.Tensor) -> torch.Tensor:
        """``(B, K, p, D, S)`` views, ``(B, 1, p, D, S)`` image views, ``(B, 1, D, H, W)`` image → the sum over
        views ``(B, K, D, H, W)``."""
        return backproject_explained(views, image_views, image, angles, self.margin, self.log_softness.exp())


def conv3x3x3(inputs: torch.Tensor, weight: torch.Tensor, by_slices: bool = False) -> torch.Tensor:
    """A 3×3×3 convolution with replicate padding, stride 1, no bias (T's image correction): ``(B, C, D, H, W)``
    and weight ``(K, C, 3, 3, 3)`` → ``(B, K, D, H, W)``, the same as ``nn.Conv3d(C, K, 3, padding=1,
    padding_mode="replicate", bias=False)``.

    ``by_slices`` computes it as one 2-D convolution of the padded depth slices (a batch of ``D + 2``, in
    channels-last memory format) with the kernel's three depth planes as ``3·K`` output channels, then adds
    each output slice's three planes from its neighbours. It is what T runs on the CPU: with a few channels and
    one volume PyTorch's CPU ``conv3d`` takes its unvectorised path (``slow_conv3d``) up to about 100³ and
    its backward is slow above that too, and oneDNN's 2-D convolution of so few channels is several times
    faster on channels-last slices than on contiguous ones, forward and backward (2 channels in and 1 out,
    one AMD EPYC thread, 128³: forward and backward 0.52 → 0.10 s, forward alone 0.12 → 0.035 s against
    ``conv3d``'s 0.145 s; experiments/results/profile_stages.md). CUDA runs ``conv3d`` (cuDNN).
    """
    padded = F.pad(inputs, (1,) * 6, mode="replicate")
    if not by_slices:
        return F.conv3d(padded, weight)
    batch, channels, depth, height, width = padded.shape
    classes = weight.shape[0]
    slices = padded.transpose(1, 2).reshape(batch * depth, channels, height, width)
    slices = slices.contiguous(memory_format=torch.channels_last)
    planes = weight.permute(2, 0, 1, 3, 4).reshape(3 * classes, channels, 3, 3)  # (depth tap, class) outputs
    out = F.conv2d(slices, planes).view(batch, depth, 3, classes, height - 2, width - 2)
    summed = out[:, :-2, 0] + out[:, 1:-1, 1] + out[:, 2:, 2]  # output slice z reads padded slices z, z+1, z+2
    return summed.transpose(1, 2).contiguous()


class Head(nn.Module):
    """T: 3-D smoothing (kernel 3, stride 1, same size) → optionally the image's correction → learnable
    normalisation → activation.

    With ``image_channels`` > 0 (``ModelConfig.head_image``) a 3×3×3 convolution of the reconstruction's
    classes and the image's channels, initialised to zero, is added to the (smoothed) reconstruction, in its
    units, before the normalisation: ``logits = γ · (r + conv([r, x])) + β``. Measured with ``vol25d train``'s
    CPU defaults (3 seeds, held-out phantoms, experiments/results/cpu_defaults.md against
    experiments/results/cpu_defaults_head_image_off/): trained and tested on vol25d's phantoms 0.817 → 0.836
    at 48³ and 0.806 → 0.850 at 96³, on ``experiments/other_phantoms.py``'s 0.791 → 0.826 and 0.730 → 0.752,
    on ``experiments/tube_phantoms.py``'s 0.926 → 0.930 and 0.937 → 0.929; across generators +0.020 on
    average (−0.09 to +0.12); training about 16 % longer on the CPU (389–399 s against 327–351 s, with
    :func:`conv3x3x3`). On GI-tract-like phantoms (three overlapping classes, experiments/results/gi_head.md)
    the mean Dice over classes went from 0.584 to 0.645 (3 seeds).
    """

    def __init__(self, classes: int, norm: str, activation: str, pool: str = "none", threshold: float = 0.9,
                 steepness: float = 40.0, image_channels: int = 0):
        super().__init__()
        self.activation = activation
        self.pool = pool
        if pool == "learned":
            self.smooth = nn.Conv3d(classes, classes, 3, padding=1, groups=classes, bias=False, padding_mode="replicate")
            nn.init.constant_(self.smooth.weight, 1 / 27)
        self.context = None
        if image_channels:  # the module holds the weight (key head.context.weight); logits runs it via conv3x3x3
            self.context = nn.Conv3d(classes + image_channels, classes, 3, padding=1, bias=False,
                                     padding_mode="replicate")
            nn.init.zeros_(self.context.weight)
        if norm == "instance":
            self.norm = nn.InstanceNorm3d(classes, affine=True)
        else:
            self.norm = None
            # Starts as a steep soft threshold at ``threshold`` of the reconstruction (experiments/results/
            # tuning.md): 0.9 of the views' mean (a voxel that nine views in ten see as object), or 0.15 of the
            # Ram–Lak reconstruction, where thin vessels' filtered back-projection lands.
            self.scale = nn.Parameter(torch.full((classes,), float(steepness)))
            self.shift = nn.Parameter(torch.full((classes,), -steepness * threshold))

    def logits(self, volume: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """T's logits of the reconstruction ``(B, K, D, H, W)``; ``image`` ``(B, C, D, H, W)`` is needed (and
        only read) when T reads the image."""
        if self.pool == "avg":
            pooled = F.avg_pool3d(volume, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        elif self.pool == "learned":
            pooled = self.smooth(volume)
        else:
            pooled = volume
        if self.context is not None:
            if image is None:
                raise ValueError("this head reads the image (head_image=True): call head(volume, image)")
            inputs = torch.cat([pooled, image.to(pooled.dtype)], dim=1)
            by_slices = inputs.device.type == "cpu"  # see conv3x3x3
            pooled = pooled + conv3x3x3(inputs, self.context.weight, by_slices=by_slices)
        if self.norm is not None:
            return self.norm(pooled)
        return pooled * self.scale.view(1, -1, 1, 1, 1) + self.shift.view(1, -1, 1, 1, 1)

    def forward(self, volume: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        with full_precision(volume.device):  # a steep threshold: bf16's 3 digits would step its output
            logits = self.logits(volume.float(), None if image is None else image.float())
        if self.activation == "softmax":
            background = torch.zeros_like(logits[:, :1])
            return torch.softmax(torch.cat([background, logits], dim=1), dim=1)[:, 1:]
        return torch.sigmoid(logits)


class Random25DUNet(nn.Module):
    """Fully 3D segmentation from 2D views: ``head(R(filtration(unet(mip(x)))) / p)``, where ``R`` is the
    explained back-projection of the views against the image's own MIPs (``reconstruction="image"``, the
    default with MIPs) or the seed method's plain ``backproject`` (``reconstruction="seed"``).

    A training step passes the ``p`` directions it drew (:func:`~vol25d.geometry.random_directions`; the
    drawing belongs to training); inference uses all ``m``, ``view_chunk`` views at a time, so memory is the
    volume plus one chunk of views.

    Args:
        in_channels, out_channels: image channels ``C`` and foreground classes ``K``.
        view_chunk: views pushed through U at once outside training (bounds inference memory).
        checkpoint_views: in training, recompute U's activations in the backward over chunks of this many
            views (activation checkpointing); ``0`` keeps them.
        **settings: any other field of :class:`ModelConfig`.

    Shapes:
        input ``(B, C, D, H, W)`` with ``D, H, W ≥ 8`` → probabilities ``(B, K, D, H, W)``.

    Example:
        >>> model = Random25DUNet(1, 1, directions=8, views=2, channels=(4, 8), strides=(2,)).eval()
        >>> model(torch.rand(1, 1, 8, 8, 8)).shape
        torch.Size([1, 1, 8, 8, 8])
        >>> from vol25d.geometry import random_directions
        >>> angles = random_directions(8, 2, torch.Generator().manual_seed(0))
        >>> model.train()(torch.rand(1, 1, 8, 8, 8), angles).shape
        torch.Size([1, 1, 8, 8, 8])
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, view_chunk: int = DEFAULT_VIEW_CHUNK,
                 checkpoint_views: int = 0, **settings):
        super().__init__()
        config = settings.pop("config", None) or ModelConfig(in_channels=in_channels, out_channels=out_channels, **settings)
        self.config = config
        check_memory_controls(view_chunk, checkpoint_views)
        self.view_chunk, self.checkpoint_views = view_chunk, checkpoint_views
        self.unet = ViewUNet(config)
        self.filtration = Filtration(config.out_channels, config.filter_radius, config.filter_init, config.filter_fixed_dc)
        self.explanation = Explanation(config.out_channels) if config.reconstruction == "image" else None
        # The explained weights are below 1 wherever a view's ray has a brighter voxel: with perfect views the
        # best thresholds of the mean fell at 0.55–0.65 on both phantom generators (experiments/ceiling.py).
        threshold, steepness = (0.15, 20.0) if config.filter_init == "ramlak" else (0.9, 40.0)
        if config.reconstruction == "image" and config.filter_init != "ramlak":
            threshold = 0.6
        self.head = Head(config.out_channels, config.head_norm, config.activation, config.head_pool, threshold,
                         steepness, config.in_channels if config.head_image else 0)
        self.register_buffer("angles", equal_angles(config.directions), persistent=False)
        self.unet_frozen = False

    @classmethod
    def from_config(cls, config: ModelConfig, *, view_chunk: int = DEFAULT_VIEW_CHUNK,
                    checkpoint_views: int = 0) -> "Random25DUNet":
        return cls(config=config, view_chunk=view_chunk, checkpoint_views=checkpoint_views)

    def freeze_unet(self) -> None:
        """Path 2: U in eval mode with no gradient; F and T stay trainable."""
        self.unet.requires_grad_(False)
        self.unet.eval()
        self.unet_frozen = True

    def unfreeze_unet(self) -> None:
        """Fine-tuning a path-2 checkpoint in path 1: U trainable again."""
        self.unet.requires_grad_(True)
        self.unet_frozen = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.unet_frozen:
            self.unet.eval()
        return self

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input must be a 5-D tensor (B, C, D, H, W); got {shape}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"input has {x.shape[1]} channel(s) but the model expects {self.config.in_channels}; "
                "give it an image with as many channels as it was trained on"
            )
        if min(x.shape[2:]) < 8:
            raise ValueError(f"input must be at least 8 voxels along D, H and W; got {tuple(x.shape[2:])}")

    # The method, operator by operator.
    def projections(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """M: the views, ``(B, C, D, H, W)`` → ``(B, C, p, D, S)``. The input never needs a gradient here."""
        operator = mip if self.config.projection == "mip" else project
        detector = default_detector(x.shape[-2], x.shape[-1])
        return operator(x.detach(), angles.to(x.device), detector)

    def view_probabilities(self, views: torch.Tensor) -> torch.Tensor:
        """U: per-class probability that each view pixel's ray meets the object, ``(B, K, p, D, S)``,
        float32 (U itself runs in bf16 under autocast)."""
        chunk = self.checkpoint_views
        if self.training and chunk and torch.is_grad_enabled() and not self.unet_frozen:
            parts = [
                checkpoint(self.unet, views[:, :, i : i + chunk], use_reentrant=False)
                for i in range(0, views.shape[2], chunk)
            ]
            logits = torch.cat(parts, dim=2)
        else:
            logits = self.unet(views)
        return torch.sigmoid(logits.float())

    def reconstruct(self, probabilities: torch.Tensor, angles: torch.Tensor, plane: tuple[int, int],
                    image: torch.Tensor | None = None, image_views: torch.Tensor | None = None) -> torch.Tensor:
        """R ∘ F: filtered back-projection averaged over the views, ``(B, K, p, D, S)`` → ``(B, K, D, H, W)``.

        With ``reconstruction="image"`` the back-projection is the explained one and needs the image
        ``(B, C, D, H, W)`` and its views ``(B, C, p, D, S)`` (U's input; their first channel is used).

        Always float32, autocast or not: U is where mixed precision pays; F, R and T are a few operations
        per voxel, and their sums over views would lose the digits the head's threshold reads.
        """
        with full_precision(probabilities.device):
            filtered = self.filtration(probabilities.float())
            angles = angles.to(filtered.device)
            if self.explanation is None:
                return backproject(filtered, angles, plane) / angles.numel()
            if image is None or image_views is None:
                raise ValueError("reconstruction='image' needs the image and its views: call reconstruct(probabilities, "
                                 "angles, plane, image, image_views)")
            return self.explanation(filtered, image_views[:, :1].float(), image[:, :1].float(), angles) / angles.numel()

    def forward(self, x: torch.Tensor, angles: torch.Tensor | None = None, return_views: bool = False):
        """M → U → F → R → T: probabilities ``(B, K, D, H, W)`` of the image ``x`` from its views at
        ``angles`` ``(p,)`` (a training step's drawn directions; default, outside training only, all ``m``).

        Outside training (unless ``return_views``) the views go through U ``view_chunk`` at a time and their
        reconstructions are summed, which is the same result in less memory. ``return_views`` also returns
        U's view probabilities ``(B, K, p, D, S)`` (deep supervision).
        """
        self.check_input(x)
        if angles is None:
            if self.training:
                raise ValueError("a training step passes its p directions: model(x, angles), angles from "
                                 "vol25d.geometry.random_directions")
            angles = self.angles
        plane = (x.shape[-2], x.shape[-1])
        if not (self.training or return_views):
            return self.head(self._reconstruct_in_chunks(x, angles, plane), x)
        views = self.projections(x, angles)  # M
        probabilities = self.view_probabilities(views)  # U
        output = self.head(self.reconstruct(probabilities, angles, plane, x, views), x)  # T ∘ R ∘ F
        return (output, probabilities) if return_views else output

    def all_view_probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """U ∘ M at all ``m`` directions, ``view_chunk`` views at a time (path 2 caches these).

        Returns:
            ``(probabilities, image_views)``: float32 ``(B, K, m, D, S)``, and the image's own views (first
            channel) ``(B, 1, m, D, S)`` when the reconstruction needs them (``reconstruction="image"``), else
            ``None``. Pass both to :meth:`segment_from_views`.
        """
        parts, image_parts = [], []
        for _, views, probabilities in self._view_chunks(x, self.angles):
            parts.append(probabilities.float())
            if self.explanation is not None:
                image_parts.append(views[:, :1].float())
        return torch.cat(parts, dim=2), torch.cat(image_parts, dim=2) if image_parts else None

    def segment_from_views(self, probabilities: torch.Tensor, image: torch.Tensor,
                           image_views: torch.Tensor | None = None) -> torch.Tensor:
        """T ∘ R ∘ F of U's probabilities at all ``m`` directions (from :meth:`all_view_probabilities`) for
        the image ``(B, C, D, H, W)`` they came from: probabilities ``(B, K, D, H, W)``."""
        volume = self.reconstruct(probabilities, self.angles, tuple(image.shape[-2:]), image, image_views)
        return self.head(volume, image)

    def _view_chunks(self, x: torch.Tensor, angles: torch.Tensor):
        """``(angles, views, U's probabilities)`` for consecutive chunks of ``view_chunk`` directions."""
        chunk = self.view_chunk
        for start in range(0, angles.numel(), chunk):
            part = angles[start : start + chunk]
            views = self.projections(x, part)
            yield part, views, self.view_probabilities(views)

    def _reconstruct_in_chunks(self, x, angles, plane):
        """R ∘ F ∘ U ∘ M over chunks of views, summed: memory is the volume plus one chunk of views."""
        volume = None
        for part, views, probabilities in self._view_chunks(x, angles):
            rebuilt = self.reconstruct(probabilities, part, plane, x, views) * part.numel()
            volume = rebuilt if volume is None else volume + rebuilt
        return volume / angles.numel()

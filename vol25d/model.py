"""The random 2.5D U-Net: projection M → 2D U-Net U → filtration F → back-projection R → fine-tuning head T.

Imports torch and monai (and :mod:`vol25d.settings`, where :class:`ModelConfig` lives), so a GPU machine needs
nothing else to run it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch.utils.checkpoint import checkpoint

from vol25d.device import full_precision
from vol25d.geometry import default_detector, equal_angles
from vol25d.ops import backproject, backproject_explained, filter_views, mip, project, ramp_filter
from vol25d.settings import DEFAULT_VIEW_CHUNK, RUNTIME_SETTINGS, ModelConfig, check_memory_controls

__all__ = ["ModelConfig", "Random25DUNet", "ViewUNet", "Filtration", "Explanation", "Head", "RUNTIME_SETTINGS",
           "DEFAULT_VIEW_CHUNK", "check_memory_controls", "conv3x3x3"]


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
    ``s = exp(log_softness)`` (positive by construction). Starts at ``margin = 0.1``, ``s = 0.3``, for images
    normalised to about ``[0, 1]`` (docs/method.md, "The reconstruction uses the image", says why there)."""

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
    one volume PyTorch's CPU ``conv3d`` takes its unvectorised path (``slow_conv3d``) up to about 100³ and its
    backward is slow above that too, while oneDNN's 2-D convolution of so few channels is fast on channels-last
    slices, forward and backward (timings: experiments/results/profile_stages.md). CUDA runs ``conv3d`` (cuDNN).
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
    units, before the normalisation: ``logits = γ · (r + conv([r, x])) + β``; on the CPU the convolution trains
    as :func:`conv3x3x3` of slices. What it changed: docs/method.md, "T reads the image".
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
            # Starts as a steep soft threshold at ``threshold`` of the reconstruction (docs/method.md): 0.9 of the
            # views' mean (a voxel that nine views in ten see as object), or 0.15 of the Ram–Lak reconstruction,
            # where thin vessels' filtered back-projection lands.
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
        # The explained weights are below 1 wherever a view's ray has a brighter voxel, so T starts lower there
        # (the perfect-view thresholds behind 0.6: docs/method.md, "F starts as the identity").
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

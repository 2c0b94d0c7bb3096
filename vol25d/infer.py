"""Whole-volume prediction: files in, files out on the input's own grid (shape, affine, orientation).

The flow of DESIGN.md: file → :mod:`vol25d.io` (Volume) → :mod:`vol25d.data.preprocess` (canonical,
resampled, normalised tensor) → the model with all ``m`` directions, in chunks of views → back to the
native grid → a file with the input's geometry, written atomically.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from vol25d.checkpoint import load_checkpoint, model_from_checkpoint
from vol25d.data.dataset import group_channel_files
from vol25d.data.preprocess import PreprocessConfig, preprocess_image, restore
from vol25d.device import autocast, resolve_device
from vol25d.errors import InputError
from vol25d.io import WRITE_SUFFIXES, Volume, read_volume, write_volume
from vol25d.model import Random25DUNet

log = logging.getLogger(__name__)

__all__ = ["Predictor", "predict", "probabilities_to_labels", "remove_small_components"]

_ENDINGS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
# Mirrors averaged by test-time augmentation: none, then each axis of the (D, H, W) grid alone.
_TTA_FLIPS = ((), (2,), (3,), (4,))


def _ending(path: Path) -> str | None:
    name = path.name.lower()
    return next((e for e in _ENDINGS if name.endswith(e)), None)


@dataclass
class Predictor:
    """A loaded checkpoint ready to segment volumes.

    Attributes:
        model: the network, in eval mode on ``device``.
        preprocess: the preprocessing the checkpoint was trained with.
        class_names, channel_names: from the training data.
        multi_label: whether classes may overlap (the output is then 4-D, one channel per class).
    """

    model: Random25DUNet
    preprocess: PreprocessConfig
    class_names: list[str]
    channel_names: list[str]
    multi_label: bool
    device: torch.device
    amp: bool = True
    source: Path | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "auto", amp: bool = True) -> "Predictor":
        """Load a ``path1.pt`` or ``path2.pt`` (safely: tensors and plain values only)."""
        values = load_checkpoint(checkpoint)
        model = model_from_checkpoint(values, checkpoint)
        target = resolve_device(device)
        model.to(target).eval()
        return cls(
            model,
            PreprocessConfig.from_dict(values["preprocess"]),
            list(values["class_names"]),
            list(values["channel_names"]),
            bool(values.get("multi_label", False)),
            target,
            amp,
            Path(checkpoint),
        )

    @torch.no_grad()
    def probabilities(self, images: list[Volume], tta: bool = False) -> np.ndarray:
        """Per-class probabilities on the input's native grid.

        Args:
            images: one :class:`~vol25d.io.Volume` per channel, on the same grid.
            tta: average the predictions of mirrored inputs.

        Returns:
            float32 ``(X, Y, Z, K)`` in the input's voxel order.
        """
        if len(images) != len(self.channel_names):
            raise InputError(
                f"{images[0].path or 'the input'}: the model takes {len(self.channel_names)} channel(s) "
                f"{self.channel_names} but {len(images)} were given; pass one file per channel "
                "(case_0000, case_0001 …)"
            )
        tensor, info = preprocess_image(images, self.preprocess)
        x = tensor[None].to(self.device)
        total = None
        for axes in _TTA_FLIPS if tta else ((),):
            flipped = x.flip(axes) if axes else x
            with autocast(self.device, self.amp):
                output = self.model(flipped).float()
            output = output.flip(axes) if axes else output
            total = output if total is None else total + output
        probabilities = total[0] / (len(_TTA_FLIPS) if tta else 1)
        return restore(probabilities, info)

    def labels(self, probabilities: np.ndarray, threshold: float = 0.5, min_size: int = 0) -> np.ndarray:
        """Probabilities ``(X, Y, Z, K)`` → uint8 labels: 4-D one channel per class for a multi-label model,
        else a 3-D map of class values (0 = background)."""
        return probabilities_to_labels(probabilities, threshold, self.multi_label, min_size)


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop the 26-connected components of a boolean 3-D mask smaller than ``min_size`` voxels."""
    if min_size <= 1 or not mask.any():
        return mask
    components, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[components]


def probabilities_to_labels(probabilities: np.ndarray, threshold: float, multi_label: bool, min_size: int = 0) -> np.ndarray:
    """Threshold per-class probabilities ``(X, Y, Z, K)`` into uint8 labels.

    Multi-label: ``(X, Y, Z, K)`` binary, each class thresholded on its own. Otherwise ``(X, Y, Z)``: the most
    probable class where its probability reaches ``threshold``, else 0. ``min_size`` drops smaller components
    of every class.
    """
    if multi_label:
        masks = probabilities >= threshold
        for k in range(masks.shape[-1]):
            masks[..., k] = remove_small_components(masks[..., k], min_size)
        return masks.astype(np.uint8)
    best = probabilities.argmax(axis=-1)
    confident = np.take_along_axis(probabilities, best[..., None], axis=-1)[..., 0] >= threshold
    labels = np.where(confident, best + 1, 0).astype(np.uint8)
    if min_size > 1:
        for value in range(1, probabilities.shape[-1] + 1):
            mask = labels == value
            labels[mask & ~remove_small_components(mask, min_size)] = 0
    return labels


def _cases(inputs: Path) -> dict[str, list[Path]]:
    if not inputs.exists():
        raise FileNotFoundError(f"input {inputs} does not exist; pass an image file or a folder of images")
    if inputs.is_file():
        ending = _ending(inputs)
        if ending is None:
            raise InputError(f"{inputs} is not an image vol25d reads; use {', '.join(_ENDINGS)}")
        return {inputs.name[: -len(ending)]: [inputs]}
    if any(p.suffix.lower() == ".dcm" for p in inputs.iterdir()):
        return {inputs.name: [inputs]}  # a DICOM series folder is one image
    cases = group_channel_files(inputs)
    if not cases:
        raise InputError(f"{inputs} holds no images; put .nii.gz (or .nii, .mha, .nrrd) files in it")
    return cases


def predict(
    inputs: str | Path,
    output: str | Path,
    checkpoint: str | Path,
    *,
    threshold: float = 0.5,
    probabilities: bool = False,
    tta: bool = False,
    min_size: int = 0,
    report: bool = False,
    device: str = "auto",
) -> list[Path]:
    """Segment an image file or a folder of them and write the results with each input's geometry.

    Args:
        inputs: an image file (NIfTI, ``.mha``, ``.nrrd``, a DICOM folder) or a folder of them; nnU-Net
            ``_0000``, ``_0001`` … files of one case are its channels.
        output: a file (for a single input) or a folder (outputs named by case, in the input's format).
        checkpoint: ``RUN/path2.pt`` or ``RUN/path1.pt``.
        threshold: probability at which a voxel is labelled.
        probabilities: write float32 probabilities (``(X, Y, Z)`` for one class, ``(X, Y, Z, K)`` for more)
            instead of labels.
        tta: average mirrored predictions.
        min_size: drop connected components smaller than this many voxels.
        report: write a PNG beside each output (MIPs with the mask overlaid, three orthogonal slices).
        device: ``"auto"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        The written files.
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1; got {threshold}")
    inputs, output = Path(inputs), Path(output)
    cases = _cases(inputs)
    predictor = Predictor.load(checkpoint, device)
    single_file = len(cases) == 1 and inputs.is_file() and _ending(output) is not None
    written = []
    for name, paths in cases.items():
        start = time.perf_counter()
        images = [read_volume(path) for path in paths]
        for image in images:
            if image.array.ndim != 3:
                raise InputError(f"{image.path}: a 4-D image with {image.array.shape[3]} volumes; pass one 3-D volume per file")
        prob = predictor.probabilities(images, tta=tta)
        if probabilities:
            array = prob if prob.shape[-1] > 1 else prob[..., 0]
        else:
            array = predictor.labels(prob, threshold, min_size)
        ending = _ending(paths[0]) if _ending(paths[0]) in WRITE_SUFFIXES else ".nii.gz"  # .mhd, DICOM → NIfTI
        target = output if single_file else output / f"{name}{ending}"
        written.append(write_volume(Volume(array, images[0].affine, target), target, like=images[0]))
        if report:
            from vol25d.report import write_report

            write_report(images[0], prob, target.with_name(target.name[: -len(_ending(target))] + ".png"))
        log.info("%s → %s (%.1f s)", name, target, time.perf_counter() - start)
    return written

"""Whole-volume prediction: files in, files out on the input's own grid (shape, affine, orientation).

The data path of docs/design.md ("The data path, from file to file"): file → :mod:`vol25d.io` (Volume) →
:mod:`vol25d.data.preprocess` (canonical, resampled, normalised tensor) → the model with all ``m`` directions,
in chunks of views → back to the native grid → a file with the input's geometry, written atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from vol25d.checkpoint import Checkpoint
from vol25d.data.dataset import MIN_IMAGE_SIDE, group_channel_files
from vol25d.data.preprocess import PreprocessConfig, preprocess_image, restore
from vol25d.device import autocast, resolve_device
from vol25d.errors import InputError
from vol25d.io import READ_SUFFIXES, WRITE_SUFFIXES, Volume, image_suffix, is_dicom_folder, read_volume, write_volume
from vol25d.model import DEFAULT_VIEW_CHUNK, Random25DUNet, check_memory_controls
from vol25d.ops import backend
from vol25d.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["Predictor", "predict", "probabilities_to_labels", "label_map", "remove_small_components", "output_files",
           "PROBABILITIES_SUFFIX", "LABEL_MAP_SUFFIX"]

# Files written beside a case's labels: <case>_probabilities<ending> (--save-probabilities) and, for a
# multi-label model, <case>_labelmap<ending> (a 3-D map viewers open as a segmentation).
PROBABILITIES_SUFFIX = "_probabilities"
LABEL_MAP_SUFFIX = "_labelmap"
# Mirrors averaged by test-time augmentation: none, then each axis of the (D, H, W) grid alone. Off by default:
# on held-out phantoms it gained 0.008 Dice for 3.4x the time (experiments/results/tta.md).
_TTA_FLIPS = ((), (2,), (3,), (4,))


def _ending(path: Path) -> str | None:
    ending = image_suffix(path)
    return ending.lower() if ending else None


def _check_image(image: Volume) -> None:
    """Refuse what ``vol25d check-data`` flags in an image: fewer than 4 voxels along an axis, NaN/Inf voxels."""
    if min(image.shape) < MIN_IMAGE_SIDE:
        raise InputError(f"{image.path or 'the input'}: shape {image.shape} has fewer than {MIN_IMAGE_SIDE} voxels along "
                         "an axis; pass a 3-D volume")
    bad = int(image.array.size - np.count_nonzero(np.isfinite(image.array)))
    if bad:
        raise InputError(f"{image.path or 'the input'}: has {bad} NaN/Inf voxel(s); replace them (e.g. with 0) and "
                         "re-save, then predict again")


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
    def load(cls, checkpoint: str | Path, device: str = "auto", amp: bool = True,
             view_chunk: int = DEFAULT_VIEW_CHUNK) -> "Predictor":
        """Load a ``path1.pt`` or ``path2.pt`` (safely: tensors and plain values only); the model runs
        ``view_chunk`` views through U at once (memory grows with it)."""
        try:
            check_memory_controls(view_chunk, 0)
        except ValueError as error:
            raise InputError(str(error)) from None
        saved = Checkpoint.load(checkpoint)
        model = saved.model(checkpoint, view_chunk=view_chunk)
        target = resolve_device(device)
        model.to(target).eval()
        return cls(model, PreprocessConfig.from_dict(saved.preprocess), list(saved.class_names),
                   list(saved.channel_names), saved.multi_label, target, amp, Path(checkpoint))

    def probabilities(self, images: list[Volume], tta: bool = False) -> np.ndarray:
        """Per-class probabilities on the input's native grid: float32 ``(X, Y, Z, K)`` in the input's voxel
        order (the array of :meth:`probability_volume`)."""
        return self.probability_volume(images, tta).array

    @torch.no_grad()
    def probability_volume(self, images: list[Volume], tta: bool = False) -> Volume:
        """Per-class probabilities as a volume on the input's grid.

        Args:
            images: one :class:`~vol25d.io.Volume` per channel, on the same grid.
            tta: average the predictions of mirrored inputs.

        Returns:
            A :class:`~vol25d.io.Volume` with the input's affine, float32 ``(X, Y, Z, K)``.
        """
        for image in images:
            _check_image(image)
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


def label_map(probabilities: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """One 3-D uint8 map of a multi-label prediction, for viewers that open one label per voxel.

    Args:
        probabilities: ``(X, Y, Z, K)`` per-class probabilities.
        masks: ``(X, Y, Z, K)`` binary labels (thresholded, small components dropped).

    Returns:
        ``(X, Y, Z)`` uint8: ``k`` (1 … K) where class ``k`` is labelled, 0 elsewhere. Where classes overlap,
        the voxel takes the labelled class of highest probability (ties: the first class).
    """
    labelled = masks.astype(bool)
    score = np.where(labelled, probabilities, -1.0)
    best = score.argmax(axis=-1)
    return np.where(labelled.any(axis=-1), best + 1, 0).astype(np.uint8)


def _cases(inputs: Path) -> dict[str, list[Path]]:
    if not inputs.exists():
        raise FileNotFoundError(f"input {inputs} does not exist; pass an image file or a folder of images")
    if inputs.is_file():
        ending = image_suffix(inputs)
        if ending is None:
            raise InputError(f"{inputs} is not an image vol25d reads; use {', '.join(READ_SUFFIXES)} or a DICOM folder")
        return {inputs.name[: -len(ending)]: [inputs]}
    if is_dicom_folder(inputs):
        return {inputs.name: [inputs]}  # a DICOM series folder is one image
    cases = group_channel_files(inputs)
    if not cases:
        raise InputError(f"{inputs} holds no images; put {', '.join(READ_SUFFIXES)} files or DICOM slices in it")
    return cases


def output_files(target: Path, *, multi_label: bool, save_probabilities: bool, report: bool) -> dict[str, Path]:
    """Every file ``predict`` writes for one case whose labels go to ``target``, by kind.

    Kinds: ``"labels"`` (``target`` itself), ``"probabilities"`` (``<case>_probabilities<ending>``, with
    ``.nii`` written as ``.nii.gz``), ``"label_map"`` (multi-label models: ``<case>_labelmap<ending>``),
    ``"report"`` (``<case>.png``).
    """
    ending = _ending(target) or ""
    stem = target.name[: len(target.name) - len(ending)]
    files = {"labels": target}
    if save_probabilities:
        files["probabilities"] = target.with_name(stem + PROBABILITIES_SUFFIX + (".nii.gz" if ending == ".nii" else ending))
    if multi_label:
        files["label_map"] = target.with_name(stem + LABEL_MAP_SUFFIX + ending)
    if report:
        files["report"] = target.with_name(stem + ".png")
    return files


def predict(
    inputs: str | Path,
    output: str | Path,
    checkpoint: str | Path,
    *,
    threshold: float = 0.5,
    probabilities: bool = False,
    save_probabilities: bool = False,
    tta: bool = False,
    min_size: int = 0,
    report: bool = False,
    device: str = "auto",
    resume: bool = False,
    view_chunk: int = DEFAULT_VIEW_CHUNK,
) -> list[Path]:
    """Segment an image file or a folder of them and write the results with each input's geometry.

    Args:
        inputs: an image file (NIfTI, ``.mha``, ``.nrrd``/``.nhdr``, a DICOM folder) or a folder of them;
            nnU-Net ``_0000``, ``_0001`` … files of one case are its channels.
        output: a file (for a single input) or a folder (outputs named by case, in the input's format;
            ``.mhd``, ``.nhdr`` and DICOM inputs give ``.nii.gz``).
        checkpoint: ``RUN/path2.pt`` or ``RUN/path1.pt``.
        threshold: probability at which a voxel is labelled.
        probabilities: write float32 probabilities (``(X, Y, Z)`` for one class, ``(X, Y, Z, K)`` for more)
            instead of labels.
        save_probabilities: also write those probabilities beside the labels, as
            ``<case>_probabilities<ending>`` (compressed: ``.nii`` becomes ``.nii.gz``), for ensembling.
        tta: average mirrored predictions.
        min_size: drop connected components smaller than this many voxels.
        report: write a PNG beside each output (MIPs with the mask overlaid, three orthogonal slices).
        device: ``"auto"``, ``"cuda"`` or ``"cpu"``.
        resume: skip cases whose every output file exists already (files are written atomically, so a file
            that exists is complete): continues a folder an interrupted run left half done.
        view_chunk: views pushed through U at once; lower it when the device runs out of memory.

    Progress: a bar of the cases with ETA in a terminal or notebook, and a log line per case
    ``case i/N NAME → FILE (s, ETA)`` (:mod:`vol25d.progress`).

    A multi-label model writes 4-D uint8 labels (one channel per class) and, beside them, a 3-D
    ``<case>_labelmap<ending>`` that Slicer and ITK-SNAP open as a segmentation (see :func:`label_map`).

    Returns:
        The written files (those of skipped cases not included).
    """
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1; got {threshold}")
    if probabilities and save_probabilities:
        raise InputError("--probabilities writes probabilities instead of labels and --save-probabilities writes "
                         "them beside the labels; pass one of them")
    inputs, output = Path(inputs), Path(output)
    cases = _cases(inputs)
    predictor = Predictor.load(checkpoint, device, view_chunk=view_chunk)
    kernels = backend.resolve(predictor.device)  # (checked now: a fallback is said before the first case)
    plain = kernels in ("cpu", "reference")  # a device's plain default; Triton, forced or a fallback is said
    log.log(logging.DEBUG if plain else logging.INFO, "projection kernels on %s: %s", predictor.device, kernels)
    single_file = len(cases) == 1 and (inputs.is_file() or is_dicom_folder(inputs)) and _ending(output) is not None
    if single_file and _ending(output) not in WRITE_SUFFIXES:
        raise InputError(f"{output}: vol25d writes {', '.join(WRITE_SUFFIXES)}; name the output with one of them")
    plans = _output_plans(cases, output, single_file, multi_label=predictor.multi_label and not probabilities,
                          save_probabilities=save_probabilities, report=report)
    if resume:
        done = [name for name, files in plans.items() if all(path.is_file() for path in files.values())]
        if done:
            log.info("--continue: %d of %d case(s) already predicted, skipping them", len(done), len(plans))
        cases = {name: paths for name, paths in cases.items() if name not in done}
    written = []
    with Progress(len(cases), "predict", logger=log, lines=False) as bar:  # the case lines say i/N and ETA
        for name, paths in cases.items():
            start = time.perf_counter()
            written += _predict_case(predictor, paths, plans[name], threshold=threshold, probabilities=probabilities,
                                     tta=tta, min_size=min_size)
            bar.update()
            log.info("case %d/%d %s → %s (%.1f s, ETA %s)", bar.n, bar.total, name, plans[name]["labels"],
                     time.perf_counter() - start, bar.eta_text())
    return written


def _output_plans(cases: dict[str, list[Path]], output: Path, single_file: bool, **kinds) -> dict[str, dict[str, Path]]:
    """The files each case will be written to (:func:`output_files`): ``output`` itself for a single file,
    else ``output/<case><ending>`` in the input's format (``.mhd``, ``.nhdr`` and DICOM inputs give NIfTI)."""
    plans = {}
    for name, paths in cases.items():
        ending = _ending(paths[0]) if _ending(paths[0]) in WRITE_SUFFIXES else ".nii.gz"
        plans[name] = output_files(output if single_file else output / f"{name}{ending}", **kinds)
    return plans


def _predict_case(predictor: Predictor, paths: list[Path], files: dict[str, Path], *, threshold: float,
                  probabilities: bool, tta: bool, min_size: int) -> list[Path]:
    """Read one case's channel files, segment it and write ``files`` (the labels last, so that with
    ``--continue`` a case counts as done only once all its files are); the files written."""
    images = [read_volume(path) for path in paths]
    for image in images:
        if image.array.ndim != 3:
            raise InputError(f"{image.path}: a 4-D image with {image.array.shape[3]} volumes; pass one 3-D volume per file")
    volume = predictor.probability_volume(images, tta=tta)
    prob = volume.array
    squeezed = prob if prob.shape[-1] > 1 else prob[..., 0]
    outputs = [(files["probabilities"], squeezed)] if "probabilities" in files else []
    if probabilities:
        outputs.append((files["labels"], squeezed))
    else:
        labels = predictor.labels(prob, threshold, min_size)
        if "label_map" in files:
            outputs.append((files["label_map"], label_map(prob, labels)))
        outputs.append((files["labels"], labels))
    written = []
    if "report" in files:
        from vol25d.report import write_report

        write_report(images[0], prob, files["report"], rotation_axis=predictor.preprocess.rotation_axis)
        written.append(files["report"])
    for target, array in outputs:
        written.append(write_volume(dataclasses.replace(volume, array=array, path=target), target, like=images[0]))
    return written

"""Datasets in the nnU-Net v2 / MSD layout: listing cases, splitting them, grouping channels, checking files.

The layout (docs/design.md, "Data")::

    ROOT/dataset.json          {"channel_names": {"0": "MRA"}, "labels": {"background": 0, "vessel": 1},
                                "numTraining": 20, "file_ending": ".nii.gz", "multi_label": false,
                                "case_groups": {"case1_day0": "case1", …}}   (case_groups optional)
    ROOT/imagesTr/<case>_0000.nii.gz   (more channels: _0001, _0002 …)
    ROOT/labelsTr/<case>.nii.gz        3-D integer map, or 4-D (X, Y, Z, C) uint8 if "multi_label": true
    ROOT/imagesTs/<case>_0000.nii.gz   optional, no labels

Checking every file of a dataset (``vol25d check-data``) is :mod:`vol25d.data.check`.

Labels are numbered ``0 … K`` with 0 the background; foreground class ``k`` (value ``k``) is channel
``k - 1`` of a multi-label map. Hidden files (``.DS_Store``, the ``._*`` files of the MSD archives) are
ignored. ``case_groups`` (optional) names the group of a case — the patient of a scan, when one patient has
several — so that :func:`split_cases` keeps a group on one side of the split; a case it does not list is a
group of its own. :func:`load_dataset` only lists files (fast, raises on the first structural problem);
:func:`vol25d.data.check.check_dataset` also reads every file and reports every problem it finds.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vol25d.errors import InputError
from vol25d.io import READ_SUFFIXES

__all__ = ["Case", "DatasetInfo", "load_dataset", "read_dataset_json", "split_cases", "group_channel_files",
           "MIN_IMAGE_SIDE"]

log = logging.getLogger(__name__)

# Fewer voxels than this along an axis is not a volume to segment (a thumbnail, a localiser, a wrong file).
MIN_IMAGE_SIDE = 4
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    """One case: its channel files in order, its label file (``None`` for test or prediction inputs) and its
    group (the patient, from ``dataset.json``'s ``case_groups``; ``None``: a group of its own)."""

    name: str
    image_paths: list[Path]
    label_path: Path | None = None
    group: str | None = None


@dataclass
class DatasetInfo:
    """A dataset folder as ``dataset.json`` describes it and as its files list it.

    Attributes:
        root: the dataset folder.
        channel_names: input channel names in channel order (``_0000``, ``_0001`` …).
        labels: label name → value, background (0) included.
        class_names: foreground class names in value order (value 1 first): the model's output channels.
        multi_label: labels are 4-D ``(X, Y, Z, C)`` binary maps with ``C = len(class_names)``.
        file_ending: the image file suffix, e.g. ``".nii.gz"``.
        cases: training cases (``imagesTr`` with ``labelsTr``), sorted by name.
        test_cases: ``imagesTs`` cases without labels, sorted by name (empty without ``imagesTs``).
        num_training: ``numTraining`` from ``dataset.json`` (``None`` if absent).
    """

    root: Path
    channel_names: list[str]
    labels: dict[str, int]
    class_names: list[str]
    multi_label: bool
    file_ending: str
    cases: list[Case]
    test_cases: list[Case] = field(default_factory=list)
    num_training: int | None = None


def load_dataset(root: str | os.PathLike) -> DatasetInfo:
    """Read ``dataset.json`` and list the cases of a dataset folder (no image is read).

    Args:
        root: the dataset folder holding ``dataset.json``, ``imagesTr/``, ``labelsTr/`` (and ``imagesTs/``).

    Returns:
        A :class:`DatasetInfo`.

    Raises:
        InputError: the folder, ``dataset.json``, ``imagesTr/`` or ``labelsTr/`` is missing, the JSON is
            malformed, or the files do not form complete cases (a missing channel or label, a label without
            image …). The message names the first problem; ``vol25d check-data ROOT`` lists them all.
    """
    info, problems = _scan(Path(root))
    if problems:
        more = f" (and {len(problems) - 1} more problems: run `vol25d check-data {root}` to list them all)"
        raise InputError(problems[0] + (more if len(problems) > 1 else ""))
    return info


def split_cases(
    cases: list[Case], val_fraction: float = 0.2, seed: int = 0, group: Callable[[Case], str] | None = None
) -> tuple[list[Case], list[Case]]:
    """Split cases at random into training and validation sets, whole groups at a time.

    Cases of one group (one patient's scans) all fall on the same side, so that a validation score does not
    profit from other scans of the same patient in training. The split depends only on the case and group
    names, ``val_fraction`` and ``seed`` (not on the list's order); when every case is its own group it is
    the same split as one by case name. With two or more groups both sets are non-empty; a single group goes
    to training.

    Args:
        cases: the cases to split.
        val_fraction: wanted share of validation *groups*, in ``(0, 1)``; rounded, then clamped to
            ``[1, number of groups - 1]``.
        seed: seed of the shuffle.
        group: a case → its group name; ``None``: :attr:`Case.group`, or the case's own name when that is
            ``None`` (e.g. ``lambda case: case.name.split("_")[0]`` groups ``case7_day0`` with ``case7_day3``).

    Returns:
        ``(train, val)``, each sorted by case name.

    Raises:
        ValueError: ``val_fraction`` outside ``(0, 1)``.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1); got {val_fraction}")
    group_of = group or (lambda case: case.name if case.group is None else case.group)
    ordered = sorted(cases, key=lambda case: case.name)
    groups = sorted({group_of(case) for case in ordered})
    if len(groups) < 2:
        return ordered, []
    n_val = min(max(round(len(groups) * val_fraction), 1), len(groups) - 1)
    chosen = {groups[i] for i in np.random.default_rng(seed).permutation(len(groups))[:n_val].tolist()}
    train = [case for case in ordered if group_of(case) not in chosen]
    val = [case for case in ordered if group_of(case) in chosen]
    return train, val


def group_channel_files(
    folder_or_files: str | os.PathLike | Iterable[str | os.PathLike],
    file_ending: str | None = None,
    *,
    split_channels: bool = True,
) -> dict[str, list[Path]]:
    """Group image files into cases by the nnU-Net channel suffix, for prediction inputs.

    ``ct_01_0000.nii.gz`` and ``ct_01_0001.nii.gz`` form case ``ct_01`` with two channels; a file without a
    ``_NNNN`` suffix (``scan.nii.gz``) is a single-channel case of its own (``scan``).

    Args:
        folder_or_files: a folder (its non-hidden files are used) or a list of files.
        file_ending: only files with this suffix count (e.g. ``".nii.gz"``); ``None``: any image suffix
            vol25d reads (``.nii.gz``, ``.nii``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``).
        split_channels: ``False`` makes every file a case of its own, named by its whole stem: for folders
            of label maps or predictions, whose case names may themselves end in ``_NNNN``.

    Returns:
        Case name → its channel files in channel order, sorted by case name.

    Raises:
        FileNotFoundError: the folder or a listed file does not exist.
        InputError: no image files, a case whose channels are not ``0 … n-1`` without gaps, or two files
            that claim the same case and channel.
    """
    files, where = _listed_files(folder_or_files, file_ending)
    channels: dict[str, dict[int, Path]] = {}
    for path in files:
        ending = _ending(path, file_ending)
        if ending is None:
            raise InputError(f"{path}: is not an image file ending in {file_ending or ', '.join(READ_SUFFIXES)}; "
                             "pass image files only")
        case, channel = _split_name(path.name[: -len(ending)]) if split_channels else (None, None)
        if channel is None:
            case, channel = path.name[: -len(ending)], 0
        if channel in channels.setdefault(case, {}):
            raise InputError(f"{path}: case {case!r} channel {channel} is also given by "
                             f"{channels[case][channel]}; rename or remove one of them")
        channels[case][channel] = path
    if not channels:
        raise InputError(f"{where}: holds no image files ending in {file_ending or ', '.join(READ_SUFFIXES)}; "
                         "point to the folder with the images")
    return {case: _channel_list(case, channels[case]) for case in sorted(channels)}


def _listed_files(folder_or_files, file_ending: str | None) -> tuple[list[Path], str]:
    """The files of :func:`group_channel_files`'s argument, and how to name where they are."""
    if isinstance(folder_or_files, (str, os.PathLike)):
        folder = Path(folder_or_files)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder or file; check the path")
        return (sorted(_image_files(folder, file_ending)) if folder.is_dir() else [folder]), str(folder)
    files = [Path(f) for f in folder_or_files]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file; check the path")
    return files, "the given files"


def _channel_list(case: str, found: dict[int, Path]) -> list[Path]:
    """A case's channel files in channel order; :class:`InputError` if the channels are not ``0 … n-1``."""
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise InputError(f"{found[min(found)]}: case {case!r} has channels {sorted(found)} but not {missing}; "
                         f"add {case}_{missing[0]:04d}… or rename the channels to start at _0000")
    return [found[c] for c in sorted(found)]


# ----------------------------------------------------------------------------------------------- internals


def _scan(root: Path) -> tuple[DatasetInfo | None, list[str]]:
    """List a dataset folder: ``(info, problems)``; ``info`` is ``None`` when nothing more can be checked."""
    if not root.is_dir():
        return None, [f"{root}: no such dataset folder; pass the folder that holds dataset.json and imagesTr/"]
    try:
        meta = read_dataset_json(root / "dataset.json")
    except InputError as error:
        return None, [str(error)]
    images_dir, labels_dir, test_dir = root / "imagesTr", root / "labelsTr", root / "imagesTs"
    ending, n_channels = meta["file_ending"], len(meta["channel_names"])
    if not images_dir.is_dir():
        return None, [f"{images_dir}: folder missing; put the training images there as <case>_0000{ending}"]
    problems: list[str] = []
    cases = _list_cases(images_dir, ending, n_channels, problems)
    if labels_dir.is_dir():
        label_files = {path.name[: -len(ending)]: path for path in _listing(labels_dir, ending, problems)}
    else:
        problems.append(f"{labels_dir}: folder missing; put one label map <case>{ending} per training case there")
        label_files = {}
    for case in cases:
        case.group = meta["case_groups"].get(case.name)
        case.label_path = label_files.pop(case.name, None)
        if case.label_path is None and labels_dir.is_dir():
            problems.append(f"{labels_dir / (case.name + ending)}: label missing for {case.image_paths[0].name}; "
                            "add it or remove the case's images")
    incomplete = _case_names(images_dir, ending) - {case.name for case in cases}  # already reported
    for name, path in sorted(label_files.items()):
        if name in incomplete:
            continue
        problems.append(f"{path}: label without an image; add {images_dir / f'{name}_0000{ending}'} or remove "
                        "the label")
    test_cases = _list_cases(test_dir, ending, n_channels, problems) if test_dir.is_dir() else []
    if not cases:
        problems.append(f"{images_dir}: holds no <case>_0000{ending} files; add the training images")
    labels = meta["labels"]
    info = DatasetInfo(
        root=root,
        channel_names=meta["channel_names"],
        labels=labels,
        class_names=[name for name, _ in sorted(labels.items(), key=lambda item: item[1]) if labels[name] != 0],
        multi_label=meta["multi_label"],
        file_ending=meta["file_ending"],
        cases=cases,
        test_cases=test_cases,
        num_training=meta["num_training"],
    )
    return info, problems


def read_dataset_json(path: Path) -> dict:
    """``dataset.json`` validated and normalised (channel list, label dict, defaults filled in)."""
    if not path.is_file():
        raise InputError(f"{path}: missing; write a dataset.json with channel_names, labels, numTraining and "
                         "file_ending (see data/README.md)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: is not valid JSON ({error.msg} at line {error.lineno}, column "
                         f"{error.colno}); fix the syntax") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read ({error}); check the file's permissions and encoding") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: must hold a JSON object; got {type(raw).__name__}")
    channels = raw.get("channel_names", raw.get("modality"))  # "modality" is the MSD / nnU-Net v1 name
    if not isinstance(channels, dict) or not channels:
        raise InputError(f'{path}: needs "channel_names", e.g. {{"0": "MRA"}}; add it')
    if set(channels) != {str(i) for i in range(len(channels))}:
        raise InputError(f"{path}: channel_names keys must be \"0\" … \"{len(channels) - 1}\"; got "
                         f"{sorted(channels)}")
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f'{path}: needs "labels", e.g. {{"background": 0, "vessel": 1}}; add it')
    if all(isinstance(v, str) for v in labels.values()) and all(str(k).isdigit() for k in labels):
        labels = {name: int(value) for value, name in labels.items()}  # MSD style: {"0": "background"}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{path}: label {name!r} has value {value!r}; vol25d needs one integer per label "
                             "(region-based labels are not supported)")
    if sorted(labels.values()) != list(range(len(labels))):
        raise InputError(f"{path}: label values must be 0 … {len(labels) - 1} without gaps or repeats, 0 being "
                         f"the background; got {sorted(labels.values())}")
    if len(labels) < 2:
        raise InputError(f"{path}: labels declare no foreground class; add one, e.g. \"vessel\": 1")
    file_ending = raw.get("file_ending", ".nii.gz")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise InputError(f'{path}: file_ending must be a suffix such as ".nii.gz"; got {file_ending!r}')
    multi_label = raw.get("multi_label", False)
    if not isinstance(multi_label, bool):
        raise InputError(f"{path}: multi_label must be true or false; got {multi_label!r}")
    num_training = raw.get("numTraining")
    if num_training is not None and (isinstance(num_training, bool) or not isinstance(num_training, int)):
        raise InputError(f"{path}: numTraining must be an integer; got {num_training!r}")
    case_groups = raw.get("case_groups", {})
    if not isinstance(case_groups, dict) or not all(isinstance(v, str) and v for v in case_groups.values()):
        raise InputError(f'{path}: case_groups must map case names to group names, e.g. {{"case1_day0": '
                         f'"case1"}}; got {str(case_groups)[:80]}')
    return {
        "channel_names": [str(channels[str(i)]) for i in range(len(channels))],
        "labels": dict(labels),
        "file_ending": file_ending,
        "multi_label": multi_label,
        "num_training": num_training,
        "case_groups": dict(case_groups),
    }


def _listing(folder: Path, file_ending: str, problems: list[str]) -> list[Path]:
    """Non-hidden files of ``folder`` ending in ``file_ending``; other image files are reported."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.name.endswith(file_ending) and len(path.name) > len(file_ending):
            found.append(path)
        elif _ending(path, None) is not None:
            problems.append(f"{path}: does not end in {file_ending!r} (dataset.json's file_ending) and is "
                            "ignored; convert it or change file_ending")
    return found


def _list_cases(folder: Path, file_ending: str, n_channels: int, problems: list[str]) -> list[Case]:
    """Cases of an ``imagesTr``/``imagesTs`` folder; incomplete or misnamed files go to ``problems``."""
    channels: dict[str, dict[int, Path]] = {}
    for path in _listing(folder, file_ending, problems):
        case, channel = _split_name(path.name[: -len(file_ending)])
        if channel is None:
            problems.append(f"{path}: has no _0000 channel suffix; rename it "
                            f"{path.name[: -len(file_ending)]}_0000{file_ending}")
        elif channel >= n_channels:
            problems.append(f"{path}: channel {channel} but dataset.json declares {n_channels} channel(s); "
                            "remove the file or add the channel to channel_names")
        else:
            channels.setdefault(case, {})[channel] = path
    cases = []
    for case in sorted(channels):
        missing = [c for c in range(n_channels) if c not in channels[case]]
        for c in missing:
            problems.append(f"{folder / f'{case}_{c:04d}{file_ending}'}: missing (channel {c} of case {case!r}); "
                            "add it or remove the case's other channels")
        if not missing:
            cases.append(Case(case, [channels[case][c] for c in range(n_channels)]))
    return cases


def _case_names(folder: Path, file_ending: str) -> set[str]:
    """Every case name that a ``<case>_NNNN`` file of ``folder`` names, complete or not."""
    names = (_split_name(p.name[: -len(file_ending)]) for p in _listing(folder, file_ending, []))
    return {case for case, channel in names if channel is not None}


def _split_name(stem: str) -> tuple[str, int | None]:
    match = _CHANNEL.match(stem)
    return (match["case"], int(match["channel"])) if match else (stem, None)


def _ending(path: Path, file_ending: str | None) -> str | None:
    """The suffix of ``path`` among ``file_ending`` (or every image suffix), or ``None``."""
    name = path.name.lower()
    for ending in (file_ending.lower(),) if file_ending else READ_SUFFIXES:
        if name.endswith(ending) and len(name) > len(ending):
            return path.name[len(path.name) - len(ending):]
    return None


def _image_files(folder: Path, file_ending: str | None) -> list[Path]:
    return [p for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and _ending(p, file_ending) is not None]



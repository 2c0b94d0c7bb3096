"""The Kaggle UW-Madison GI-tract data: 16-bit PNG slices and RLE masks in, MSD-layout NIfTI out, and back.

The competition's folder::

    src/train.csv                                   id,class,segmentation
    src/train/<case>/<case_day>/scans/slice_XXXX_W_H_pw_ph.png
    src/test/<case>/<case_day>/scans/…              (present only while a notebook is scored)

- Ids are ``<case_day>_slice_XXXX`` (``case123_day20_slice_0001``); classes are large_bowel, small_bowel,
  stomach, which overlap, so labels are 4-D multi-label ``(X, Y, Z, 3)`` uint8 in that order.
- RLE: space-separated 1-indexed ``start length`` pairs over the row-major (C-order) flattened ``H×W``
  slice — the order ``train.csv`` decodes to (the Evaluation page's "top to bottom, then left to right"
  wording is boilerplate from older competitions and does not match the files). Empty string = empty mask.
- A slice PNG has rows ``y`` and columns ``x``: ``png[y, x]`` goes to ``volume[x, y, z]``, ``z`` the
  position of the slice in slice-number order. Spacing ``(pw, ph, 3.0)`` mm.
- Affine ``diag(pw, ph, 3.0, 1)``, origin 0. The competition gives no patient orientation beyond "slices
  run superior–inferior, 3 mm apart", so we claim no flips: reorienting to RAS+ is then a no-op, the slice
  axis stays ``Z`` (the default rotation axis SI), and predictions map back to the PNG grid unchanged.
  Anatomical left/right shown by a viewer is not meaningful for these files.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.io import Volume, write_volume

__all__ = [
    "CLASSES",
    "SLICE_THICKNESS_MM",
    "SliceFile",
    "convert_gitract",
    "gitract_affine",
    "list_case_slices",
    "list_test_slices",
    "load_slice_index",
    "parse_slice_name",
    "patient_of",
    "read_gitract_case",
    "read_gitract_test_case",
    "read_train_csv",
    "rle_decode",
    "rle_encode",
    "submission_rows",
    "write_submission",
]

log = logging.getLogger(__name__)

CLASSES = ("large_bowel", "small_bowel", "stomach")
SLICE_THICKNESS_MM = 3.0
_SLICE_NAME = re.compile(r"^slice_(\d+)_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$")


# --- RLE --------------------------------------------------------------------------------------------


def _is_count(token: str) -> bool:
    return token.isascii() and token.isdigit()  # str.isdigit alone accepts '²' and other Unicode digits


def rle_decode(rle: str, shape: tuple[int, int], *, name: str = "RLE") -> np.ndarray:
    """Decode a competition RLE string into one slice mask.

    Args:
        rle: ``"start length start length …"``, starts 1-indexed into the C-order flattened slice; ``""``
            (or only whitespace) is an empty mask.
        shape: ``(H, W)`` of the slice (PNG rows, columns).
        name: what the string is, for error messages (e.g. ``"train.csv id case1_day0_slice_0001 stomach"``).

    Returns:
        ``(H, W)`` uint8 mask of 0 and 1.

    Raises:
        InputError: odd number of values, a value that is not a positive integer, a run past the end of
            the slice, or runs that are unsorted or overlap.
    """
    height, width = (int(n) for n in shape)
    size = height * width
    flat = np.zeros(size, np.uint8)
    tokens = rle.split() if isinstance(rle, str) else None
    if tokens is None:
        raise InputError(f"{name}: RLE must be a string; got {type(rle).__name__} — use '' for an empty mask")
    if not tokens:
        return flat.reshape(height, width)
    if len(tokens) % 2:
        raise InputError(
            f"{name}: RLE has an odd number of values ({len(tokens)}); it must be 'start length' pairs — fix or "
            "blank that entry"
        )
    if not all(_is_count(token) for token in tokens):
        bad = next(token for token in tokens if not _is_count(token))
        raise InputError(f"{name}: RLE value {bad!r} is not a positive integer; fix or blank that entry")
    values = [int(token) for token in tokens]  # Python ints first: a 30-digit value must not overflow int64
    starts, lengths = np.asarray(values[0::2], dtype=object), np.asarray(values[1::2], dtype=object)
    ends = starts + lengths - 1  # inclusive, 1-indexed
    if min(values) < 1:
        raise InputError(f"{name}: RLE starts and lengths must be ≥ 1 (pixels are 1-indexed); fix that entry")
    if max(ends) > size:
        raise InputError(
            f"{name}: RLE run ends at pixel {max(ends)}, past the {height}×{width} = {size} pixels of the "
            "slice; check the slice size or the mask"
        )
    starts, ends = starts.astype(np.int64), ends.astype(np.int64)
    if np.any(starts[1:] <= ends[:-1]):
        raise InputError(f"{name}: RLE runs are unsorted or overlap; runs must be in increasing, disjoint order")
    for start, end in zip(starts, ends):
        flat[start - 1 : end] = 1
    return flat.reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode one slice mask as the competition's RLE (the inverse of :func:`rle_decode`).

    Args:
        mask: ``(H, W)``, non-zero = foreground.

    Returns:
        ``"start length …"`` over the C-order flattened slice, 1-indexed, maximal runs; ``""`` if empty.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode needs a 2-D (H, W) slice mask; got shape {mask.shape}")
    padded = np.concatenate([[0], mask.reshape(-1) != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded)) + 1  # 1-indexed run starts and one-past-ends, alternating
    starts, stops = edges[0::2], edges[1::2]
    return " ".join(f"{start} {stop - start}" for start, stop in zip(starts, stops))


# --- slices and cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceFile:
    """One slice PNG and what its name says.

    Attributes:
        path: the PNG file.
        case_day: ``"case123_day20"``.
        number: slice number (``slice_0001`` → 1).
        width, height: pixels (``W``, ``H``).
        pixel_width_mm, pixel_height_mm: spacing along ``x`` (columns) and ``y`` (rows).
    """

    path: Path
    case_day: str
    number: int
    width: int
    height: int
    pixel_width_mm: float
    pixel_height_mm: float

    @property
    def id(self) -> str:
        """The competition id, ``"<case_day>_slice_XXXX"``."""
        return f"{self.case_day}_slice_{self.number:04d}"


def parse_slice_name(path: str | os.PathLike, case_day: str = "") -> SliceFile:
    """Parse ``slice_XXXX_W_H_pw_ph.png`` (e.g. ``slice_0001_266_266_1.50_1.50.png``).

    Args:
        path: the file (only its name is parsed).
        case_day: the ``<case_day>`` folder it belongs to, for :attr:`SliceFile.id`.

    Returns:
        A :class:`SliceFile`.

    Raises:
        InputError: the name does not follow the pattern or has zero sizes.
    """
    path = Path(path)
    match = _SLICE_NAME.match(path.name)
    if match is None:
        raise InputError(
            f"{path}: slice file name {path.name!r} is not 'slice_XXXX_W_H_pw_ph.png' (e.g. "
            "'slice_0001_266_266_1.50_1.50.png'); rename it or remove it from the scans folder"
        )
    number, width, height = (int(g) for g in match.groups()[:3])
    pixel_width, pixel_height = float(match.group(4)), float(match.group(5))
    if min(width, height) == 0 or min(pixel_width, pixel_height) <= 0:
        raise InputError(f"{path}: slice file name {path.name!r} gives a zero size or spacing; fix the name")
    return SliceFile(path, case_day, number, width, height, pixel_width, pixel_height)


def list_case_slices(case_day_dir: str | os.PathLike) -> list[SliceFile]:
    """The slices of one case-day folder, in slice-number order.

    Args:
        case_day_dir: ``…/<case>/<case_day>``, holding ``scans/*.png``.

    Returns:
        :class:`SliceFile` per PNG, sorted by number; all share one size and pixel spacing.

    Raises:
        FileNotFoundError: no ``scans`` folder.
        InputError: no PNG, a malformed name, a repeated number, or slices of different size/spacing.
    """
    case_day_dir = Path(case_day_dir)
    scans = case_day_dir / "scans"
    if not scans.is_dir():
        raise FileNotFoundError(f"{scans}: no such folder; a case-day folder must hold scans/slice_*.png")
    slices = sorted(
        (parse_slice_name(p, case_day_dir.name) for p in scans.glob("*.png")), key=lambda s: s.number
    )
    if not slices:
        raise InputError(f"{scans}: holds no .png slices; remove the empty case-day folder or add its scans")
    numbers = [s.number for s in slices]
    if len(set(numbers)) != len(numbers):
        raise InputError(f"{scans}: slice numbers repeat ({numbers}); keep one file per slice number")
    geometry = {(s.width, s.height, s.pixel_width_mm, s.pixel_height_mm) for s in slices}
    if len(geometry) > 1:
        raise InputError(
            f"{scans}: slices differ in size or pixel spacing {sorted(geometry)}; one case-day must be one grid"
        )
    return slices


def gitract_affine(pixel_width_mm: float, pixel_height_mm: float) -> np.ndarray:
    """The voxel → world affine we give a case-day: ``diag(pw, ph, 3.0, 1)`` (see the module docstring)."""
    return np.diag([pixel_width_mm, pixel_height_mm, SLICE_THICKNESS_MM, 1.0])


def _read_slices(slices: Sequence[SliceFile]) -> Volume:
    """The slices as one ``(X, Y, Z)`` volume in the PNGs' own type (uint16 for the competition's 16-bit PNGs),
    so a case-day takes half the memory and disk of float32 and the values stay exact."""
    first, volume = slices[0], None
    for z, item in enumerate(slices):
        try:
            with Image.open(item.path) as image:
                pixels = np.asarray(image)
        except (OSError, SyntaxError) as error:
            raise InputError(f"{item.path}: is not a readable PNG ({error}); re-extract the dataset") from None
        if pixels.shape != (item.height, item.width):
            raise InputError(
                f"{item.path}: image is {pixels.shape} (rows, columns) but the name says H×W = "
                f"{item.height}×{item.width}; the file or its name is wrong"
            )
        if volume is None:
            volume = np.empty((first.width, first.height, len(slices)), pixels.dtype.newbyteorder("="))
        elif not np.can_cast(pixels.dtype, volume.dtype, casting="safe"):
            volume = volume.astype(np.promote_types(volume.dtype, pixels.dtype))  # an 8-bit slice, then a 16-bit
        volume[:, :, z] = pixels.T  # png[y, x] → volume[x, y]
    return Volume(volume, gitract_affine(first.pixel_width_mm, first.pixel_height_mm), first.path.parent)


def read_gitract_case(
    case_day_dir: str | os.PathLike, rles: Mapping[str, Mapping[str, str]]
) -> tuple[Volume, Volume]:
    """Read one training case-day: its slices as a volume and its RLE masks as a multi-label volume.

    Args:
        case_day_dir: ``train/<case>/<case_day>`` (holding ``scans/``).
        rles: ``{id: {class: rle}}`` as :func:`read_train_csv` returns; a missing id or class is an empty mask.

    Returns:
        ``(image, label)``: image ``(X=W, Y=H, Z=slices)`` in the PNGs' integer type (uint16), label uint8 ``(X, Y, Z, 3)`` with channels
        :data:`CLASSES`; both with affine ``diag(pw, ph, 3.0, 1)``.

    Raises:
        InputError: a malformed RLE (naming its id and class), slice name or PNG.
    """
    slices = list_case_slices(case_day_dir)
    image = _read_slices(slices)
    label = np.zeros(image.array.shape + (len(CLASSES),), np.uint8)
    for z, item in enumerate(slices):
        by_class = rles.get(item.id, {})
        for k, name in enumerate(CLASSES):
            rle = by_class.get(name, "")
            if rle:
                mask = rle_decode(rle, (item.height, item.width), name=f"train.csv id {item.id} class {name}")
                label[:, :, z, k] = mask.T
    return image, Volume(label, image.affine, image.path)


def read_gitract_test_case(case_day_dir: str | os.PathLike) -> tuple[Volume, list[SliceFile]]:
    """Read one test case-day (no masks).

    Args:
        case_day_dir: ``test/<case>/<case_day>``.

    Returns:
        ``(image, slices)``: image as in :func:`read_gitract_case`, and the slices in ``Z`` order — their
        ``number`` goes to :func:`submission_rows`, their ``id`` names the rows.
    """
    slices = list_case_slices(case_day_dir)
    return _read_slices(slices), slices


def _case_day_dirs(split_dir: Path) -> list[Path]:
    return sorted(p.parent for p in split_dir.glob("*/*/scans") if p.is_dir())


def list_test_slices(src: str | os.PathLike) -> list[SliceFile]:
    """Every slice under ``src/test/`` (each with its id, height and width), case-day by case-day.

    Args:
        src: the competition folder.

    Returns:
        :class:`SliceFile` list, sorted by case-day then slice number; empty when there is no ``test/``.
    """
    test_dir = Path(src) / "test"
    return [s for case_day in _case_day_dirs(test_dir) for s in list_case_slices(case_day)]


def read_train_csv(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Read ``train.csv`` (``id,class,segmentation``) into ``{id: {class: rle}}``.

    Raises:
        FileNotFoundError: no such file.
        InputError: missing columns or an unknown class (naming the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; the competition folder must hold train.csv")
    rles: dict[str, dict[str, str]] = {}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "class", "segmentation"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(
                f"{path}: lacks column(s) {sorted(missing)}; expected the header 'id,class,segmentation'"
            )
        for line, row in enumerate(reader, start=2):
            if row["class"] not in CLASSES:
                raise InputError(
                    f"{path}: line {line} (id {row['id']}) has class {row['class']!r}; expected one of {CLASSES}"
                )
            rles.setdefault(row["id"], {})[row["class"]] = (row["segmentation"] or "").strip()
    return rles


def _dataset_json(num_training: int, num_test: int, case_groups: dict[str, str]) -> dict:
    return {
        "name": "UW-Madison GI tract",
        "description": "Kaggle UW-Madison GI Tract Image Segmentation, one MRI volume per case-day",
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, **{name: k + 1 for k, name in enumerate(CLASSES)}},
        "multi_label": True,
        "numTraining": num_training,
        "numTest": num_test,
        "file_ending": ".nii.gz",
        "case_groups": case_groups,
    }


def _write_json(data: dict, path: Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def convert_gitract(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert the competition folder to the MSD layout vol25d trains on.

    Writes ``out/imagesTr/<case_day>_0000.nii.gz`` (the PNG values in their integer type, uint16),
    ``out/labelsTr/<case_day>.nii.gz`` (uint8 ``(X, Y, Z, 3)`` multi-label), ``out/imagesTs/<case_day>_0000.nii.gz``
    for ``src/test/`` if present, ``out/dataset.json`` (``"multi_label": true``, and ``"case_groups"``: each
    case-day's patient, the ``<case>`` folder above it, so that :func:`~vol25d.data.dataset.split_cases` keeps a
    patient's days together) and ``out/slices.json`` (see :func:`load_slice_index`).

    One case-day is in memory at a time. On Kaggle, write ``out`` outside ``/kaggle/working`` (e.g. under
    ``/tmp``): the converted copy is as large as the PNGs and does not belong in the notebook's output.

    Args:
        src: holds ``train.csv`` and ``train/`` (and optionally ``test/``).
        out: the dataset folder to create or update.

    Returns:
        ``out`` as a Path.
    """
    src, out = Path(src), Path(out)
    if not (src / "train").is_dir():
        raise FileNotFoundError(f"{src / 'train'}: no such folder; pass the competition folder as src")
    rles = read_train_csv(src / "train.csv")
    index: dict[str, dict] = {}
    seen_ids: set[str] = set()
    train_days = _case_day_dirs(src / "train")
    for case_day_dir in train_days:
        image, label = read_gitract_case(case_day_dir, rles)
        write_volume(image, out / "imagesTr" / f"{case_day_dir.name}_0000.nii.gz")
        write_volume(label, out / "labelsTr" / f"{case_day_dir.name}.nii.gz")
        slices = list_case_slices(case_day_dir)
        seen_ids.update(s.id for s in slices)
        index[case_day_dir.name] = _index_entry("train", case_day_dir, slices)
    unmatched = set(rles) - seen_ids
    if unmatched:
        log.warning(
            "train.csv: %d ids have no slice PNG under %s (e.g. %s)", len(unmatched), src / "train", min(unmatched)
        )
    test_days = _case_day_dirs(src / "test")
    for case_day_dir in test_days:
        image, slices = read_gitract_test_case(case_day_dir)
        write_volume(image, out / "imagesTs" / f"{case_day_dir.name}_0000.nii.gz")
        index[case_day_dir.name] = _index_entry("test", case_day_dir, slices)
    out.mkdir(parents=True, exist_ok=True)
    groups = {day.name: patient_of(day) for day in train_days}
    _write_json(_dataset_json(len(train_days), len(test_days), groups), out / "dataset.json")
    _write_json(index, out / "slices.json")
    log.info("converted %d training and %d test case-days to %s", len(train_days), len(test_days), out)
    return out


def patient_of(case_day_dir: str | os.PathLike) -> str:
    """The patient of a case-day folder: the ``<case>`` folder it lies in (``train/case7/case7_day0`` → ``case7``)."""
    return Path(case_day_dir).parent.name


def _index_entry(split: str, case_day_dir: Path, slices: Sequence[SliceFile]) -> dict:
    first = slices[0]
    return {
        "split": split,
        "patient": patient_of(case_day_dir),
        "height": first.height,
        "width": first.width,
        "pixel_spacing_mm": [first.pixel_width_mm, first.pixel_height_mm],
        "slice_numbers": [s.number for s in slices],
    }


def load_slice_index(dataset_dir: str | os.PathLike) -> dict[str, dict]:
    """Read ``slices.json`` written by :func:`convert_gitract`.

    Returns:
        ``{case_day: {"split": "train" | "test", "patient", "height", "width", "pixel_spacing_mm": [pw, ph],
        "slice_numbers": [...]}}``; ``slice_numbers[z]`` is the slice at volume index ``z``.
    """
    path = Path(dataset_dir) / "slices.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; convert the competition folder with convert_gitract first"
        )
    return json.loads(path.read_text())


# --- submission -------------------------------------------------------------------------------------


def submission_rows(case_day: str, pred: np.ndarray, slice_numbers: Sequence[int]) -> list[tuple[str, str, str]]:
    """Submission rows of one case-day: one per slice and class, empty RLE for an empty mask.

    Args:
        case_day: ``"case123_day20"``.
        pred: ``(X, Y, Z, 3)`` bool/uint8 in the volume order of :func:`read_gitract_test_case`, channels
            :data:`CLASSES`.
        slice_numbers: the slice number of each ``z`` (``len == Z``).

    Returns:
        ``[(id, class, rle), …]`` slice by slice, classes in :data:`CLASSES` order.
    """
    pred = np.asarray(pred)
    if pred.ndim != 4 or pred.shape[3] != len(CLASSES):
        raise InputError(f"{case_day}: prediction must be (X, Y, Z, {len(CLASSES)}); got shape {pred.shape}")
    if pred.shape[2] != len(slice_numbers):
        raise InputError(
            f"{case_day}: prediction has {pred.shape[2]} slices but {len(slice_numbers)} slice numbers were given"
        )
    rows = []
    for z, number in enumerate(slice_numbers):
        slice_id = f"{case_day}_slice_{int(number):04d}"
        for k, name in enumerate(CLASSES):
            rows.append((slice_id, name, rle_encode(pred[:, :, z, k].T)))
    return rows


def write_submission(rows: Iterable[tuple[str, str, str]], path: str | os.PathLike) -> Path:
    """Write ``submission.csv`` (header ``id,class,predicted``) atomically.

    Args:
        rows: ``(id, class, rle)`` tuples, e.g. from :func:`submission_rows`.
        path: the CSV to write; its folder is created.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("id", "class", "predicted"))
        writer.writerows(rows)
    return path


def submission_rows_for_test_set(src: str | os.PathLike, segment) -> list[tuple[str, str, str]]:
    """Segment every test case-day of the competition folder and return its submission rows.

    Each ``src/test/<case>/<case_day>`` is read with :func:`read_gitract_test_case`, passed to ``segment``,
    and its mask encoded with :func:`submission_rows`: one row per slice PNG under ``test/`` and class, the
    ids taken from the file names, in the order of :func:`list_test_slices`.

    Args:
        src: the competition folder. ``test/`` may be absent or empty (Kaggle's public run of a code
            competition notebook): then there are no rows.
        segment: a function from a case-day image :class:`~vol25d.io.Volume` ``(X, Y, Z)`` to its bool/uint8
            mask ``(X, Y, Z, 3)`` on the same grid, channels :data:`CLASSES`; e.g.
            ``lambda image: predictor.labels(predictor.probabilities([image]))`` with a
            :class:`vol25d.infer.Predictor`.

    Returns:
        ``[(id, class, rle), …]`` for :func:`write_submission`.

    Raises:
        InputError: ``segment`` returned a mask of another shape (naming the case-day and both shapes).
    """
    rows: list[tuple[str, str, str]] = []
    for case_day_dir in _case_day_dirs(Path(src) / "test"):
        image, slices = read_gitract_test_case(case_day_dir)
        pred = np.asarray(segment(image))
        expected = (*image.shape, len(CLASSES))
        if pred.shape != expected:
            raise InputError(
                f"{case_day_dir.name}: segment returned a mask of shape {pred.shape}; expected {expected}, "
                "(X, Y, Z, classes) on the grid of the image it was given"
            )
        rows += submission_rows(case_day_dir.name, pred, [s.number for s in slices])
        log.info("%s: segmented %d test slices", case_day_dir.name, len(slices))
    return rows

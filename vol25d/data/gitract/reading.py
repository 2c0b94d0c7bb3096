"""Reading the competition's folder: slice PNG names, case-days as :class:`~vol25d.io.Volume` s with their
labels from ``train.csv``, the test case-days, and each case-day's patient."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from vol25d.data.gitract.rle import rle_decode

from vol25d.errors import InputError
from vol25d.io import Volume

CLASSES = ("large_bowel", "small_bowel", "stomach")


SLICE_THICKNESS_MM = 3.0

# Training case-days whose train.csv masks are known to be wrong, which convert_gitract leaves out of training:
# case7_day0 and case81_day30, reported faulty in the competition's discussions and dropped by the widely copied
# public training notebooks of the competition (their filter: ``fault1 = 'case7_day0'``, ``fault2 =
# 'case81_day30'``, then the ids containing either are removed). Training on a wrong mask teaches the model its
# error, and validating on it scores the model against it.
MISLABELLED_CASE_DAYS = ("case7_day0", "case81_day30")


_SLICE_NAME = re.compile(r"^slice_(\d+)_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$")


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


def patient_of(case_day_dir: str | os.PathLike) -> str:
    """The patient of a case-day folder: the ``<case>`` folder it lies in (``train/case7/case7_day0`` → ``case7``)."""
    return Path(case_day_dir).parent.name

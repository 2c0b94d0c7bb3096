"""Images in and out with their geometry: a :class:`Volume` is an array plus its voxel → world affine.

The array stays in the file's own voxel order ``(X, Y, Z)`` (or ``(X, Y, Z, C)`` for multi-channel images
and 4-D multi-label maps); the affine is the NIfTI one: 4×4 float64, voxel index ``(i, j, k, 1)`` → RAS+
world millimetres. Files that SimpleITK reads (``.nrrd``, ``.mha``/``.mhd``, a DICOM series folder) store
LPS origin/spacing/direction; they are converted on the way in and back on the way out, so every module
downstream sees one convention. Reorientation to the model's ``(D, H, W)`` order lives in
:mod:`vol25d.data.orientation`, not here.

Example:
    >>> vol = read_volume("imagesTr/case_0000.nii.gz")          # doctest: +SKIP
    >>> vol.array.shape, vol.spacing                              # doctest: +SKIP
    ((256, 256, 120), array([0.7, 0.7, 1.2]))
    >>> write_volume(Volume(mask, vol.affine), "pred.nii.gz", like=vol)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from vol25d.errors import InputError
from vol25d.files import atomic_path

if TYPE_CHECKING:  # imported on first use only (_sitk)
    import SimpleITK

__all__ = ["Volume", "read_volume", "write_volume", "grid_mismatch", "image_suffix", "is_dicom_folder", "NIFTI_SUFFIXES", "ITK_SUFFIXES",
           "READ_SUFFIXES", "WRITE_SUFFIXES"]

log = logging.getLogger(__name__)

# Two images lie on one grid when their shapes are equal and their affines agree this closely: the one test
# of "the same grid" everywhere (check-data, preprocessing, evaluate). Float32 affines written by other tools
# of a 500 mm field of view agree to ~1e-5 mm.
_TRANSLATION_TOL_MM = 1e-3
_DIRECTION_TOL = 1e-4
_SPACING_RTOL = 1e-4


def _sitk(path: Path | None = None):
    """SimpleITK, imported on first use: NIfTI needs only nibabel, so a machine that reads and writes NIfTI
    alone (a GPU node with few packages) trains and predicts without it."""
    try:
        import SimpleITK
    except ImportError:
        raise InputError(f"{path or 'this image'}: reading or writing .nrrd, .mha/.mhd and DICOM needs SimpleITK; "
                         "pip install SimpleITK, or convert the images to NIfTI") from None
    return SimpleITK

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
READ_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES  # every image file ending read_volume reads (the one list)
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats only (see write_volume)
# RAS+ = diag(-1, -1, 1) · LPS: the same flip converts either way.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """An image array with its geometry.

    Attributes:
        array: voxel data in the file's own order, ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
        affine: ``(4, 4)`` float64, voxel index → RAS+ world mm (NIfTI convention).
        path: the file it was read from, if any.
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"Volume affine must be 4×4; got shape {self.affine.shape}")
        if self.path is not None:
            self.path = Path(self.path)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along ``(X, Y, Z)``: the column norms of ``affine[:3, :3]``, shape ``(3,)``."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spatial shape ``(X, Y, Z)`` (a channel axis, if any, is left out)."""
        return tuple(int(n) for n in self.array.shape[:3])


def _suffix(path: Path) -> str:
    """The format-defining suffix, lower case: ``.nii.gz`` counts as one."""
    name = path.name.lower()
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def image_suffix(path: str | os.PathLike) -> str | None:
    """The ending of an image file :func:`read_volume` reads, as spelt in the name (``.nii.gz`` is one), else ``None``.

    Example:
        >>> image_suffix("ct_01_0000.NII.GZ"), image_suffix("notes.txt")
        ('.NII.GZ', None)
    """
    name = Path(path).name
    lower = name.lower()
    for suffix in READ_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return name[len(name) - len(suffix):]
    return None


def is_dicom_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds DICOM files: one ending in ``.dcm``, or with the DICOM preamble's ``DICM``
    marker at byte 128 (scanners and PACS exports often write files with no ending at all)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or image_suffix(path) is not None:
            continue  # NIfTI, NRRD, MetaImage files are not DICOM slices: no need to open them
        if path.suffix.lower() == ".dcm":
            return True
        try:
            with path.open("rb") as stream:
                stream.seek(128)
                if stream.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _cast(array: np.ndarray, dtype) -> np.ndarray:
    """Integer data keeps its dtype (labels), anything else becomes float32, unless ``dtype`` says otherwise."""
    if dtype is not None:
        return np.asarray(array, dtype=dtype)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return np.asarray(array)
    return np.asarray(array, dtype=np.float32)


def _squeeze_dims(array: np.ndarray, path: Path) -> np.ndarray:
    """Bring any supported layout to ``(X, Y, Z)`` or ``(X, Y, Z, C)``; reject 2-D and >4-D images."""
    if array.ndim == 5 and array.shape[3] == 1:  # NIfTI vector images are stored (X, Y, Z, 1, C)
        array = array[:, :, :, 0, :]
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim < 3:
        raise InputError(
            f"{path}: is a {array.ndim}-D image of shape {array.shape}; vol25d needs a 3-D volume "
            "(X, Y, Z) — stack the slices into one volume file first"
        )
    if array.ndim > 4:
        raise InputError(
            f"{path}: has {array.ndim} dimensions (shape {array.shape}); expected (X, Y, Z) or (X, Y, Z, C) "
            "— split it into one file per channel"
        )
    return array


def _gist(error: BaseException) -> str:
    """A library error as one short line: ITK's ``ERROR`` line without its source location, whitespace folded."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    flagged = [line for line in lines if "ERROR" in line]
    text = flagged[-1] if flagged else " ".join(lines)
    text = re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", text)
    return f"{type(error).__name__}: {' '.join(text.split()) or 'no details'}"


def _read_nifti(path: Path, dtype) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(str(path), mmap=False)
    except Exception as error:  # nibabel raises ImageFileError, OSError, EOFError, … for a bad header
        raise InputError(
            f"{path}: is not a readable NIfTI image ({_gist(error)}); check that the file "
            "is a complete .nii/.nii.gz"
        ) from None
    try:
        proxy = image.dataobj
        slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
        unscaled = slope == 1.0 and inter == 0.0
        if dtype is None and unscaled and np.issubdtype(image.get_data_dtype(), np.integer):
            array = np.asarray(proxy)  # labels: keep the integer type on disk
        else:
            array = image.get_fdata(dtype=np.float32 if dtype is None else np.float64)
    except Exception as error:  # a truncated gzip stream shows up only when the data are read
        raise InputError(
            f"{path}: the image data cannot be read ({_gist(error)}); the file is truncated "
            "or corrupt — re-export or re-copy it"
        ) from None
    return _cast(array, dtype), np.asarray(image.affine, dtype=np.float64)


def _itk_to_affine(image: "SimpleITK.Image") -> np.ndarray:
    """SimpleITK's LPS origin/spacing/direction of the first three axes → a RAS+ NIfTI affine."""
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def _itk_array(image: "SimpleITK.Image") -> np.ndarray:
    """SimpleITK's C-order ``(Z, Y, X[, C])`` array (or ``(T, Z, Y, X)`` for 4-D scalar) → ``(X, Y, Z[, C])``."""
    array = _sitk().GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:  # (…, Z, Y, X, C): reverse the spatial axes only
        spatial = list(range(array.ndim - 1))[::-1]
        return np.transpose(array, spatial + [array.ndim - 1])
    return np.transpose(array, list(range(array.ndim))[::-1])


def _read_dicom_series(folder: Path) -> "SimpleITK.Image":
    reader = _sitk(folder).ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(
            f"{folder}: is a folder with no DICOM series; pass an image file or a folder of DICOM slices"
        )
    files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
    chosen = max(files, key=lambda uid: len(files[uid]))
    if len(series) > 1:  # localisers share folders with the volume; the longest series is the volume
        log.warning("%s holds %d DICOM series; reading the longest one (%s, %d files)",
                    folder, len(series), chosen, len(files[chosen]))
    reader.SetFileNames(files[chosen])
    return reader.Execute()


def read_volume(path: str | os.PathLike, dtype=None) -> Volume:
    """Read a 3-D (or 4-D) image with its geometry.

    Args:
        path: a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd`` file, or a folder holding one
            DICOM series.
        dtype: NumPy dtype of the returned array. ``None``: integer data without intensity scaling keep
            their integer type (label maps); everything else becomes ``float32``.

    Returns:
        A :class:`Volume` whose array is ``(X, Y, Z)``, or ``(X, Y, Z, C)`` for a 4-D image with more than
        one volume (a 4-D image with one volume is returned as 3-D), and whose affine is voxel → RAS+ mm.

    Raises:
        FileNotFoundError: the path does not exist.
        InputError: unsupported extension, not an image, truncated data, or a 2-D / >4-D image.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image file or DICOM folder; check the path")
    suffix = _suffix(path)
    if path.is_dir():
        array, affine = _read_itk(path, dtype, dicom=True)
    elif suffix in NIFTI_SUFFIXES:
        array, affine = _read_nifti(path, dtype)
    elif suffix in ITK_SUFFIXES:
        array, affine = _read_itk(path, dtype, dicom=False)
    else:
        raise InputError(
            f"{path}: unsupported image extension {suffix or '(none)'!r}; use one of "
            f"{', '.join(READ_SUFFIXES)} or a DICOM series folder"
        )
    return Volume(_squeeze_dims(array, path), affine, path)


def _read_itk(path: Path, dtype, *, dicom: bool) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = _read_dicom_series(path) if dicom else _sitk(path).ReadImage(str(path))
    except InputError:
        raise
    except Exception as error:  # SimpleITK raises RuntimeError with a multi-line ITK trace: keep its gist
        raise InputError(
            f"{path}: is not a readable image ({_gist(error)}); check that the file is complete and in the "
            "format its extension says"
        ) from None
    if image.GetDimension() < 3:
        raise InputError(
            f"{path}: is a {image.GetDimension()}-D image of size {image.GetSize()}; vol25d needs a 3-D volume "
            "(X, Y, Z) — stack the slices into one volume file first"
        )
    return _cast(_itk_array(image), dtype), _itk_to_affine(image)


def _writable_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Types every reader understands: bool → uint8, float16 → float32, 64-bit integers → int32 if they fit."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        info = np.iinfo(np.int32)
        if low < info.min or high > info.max:
            raise InputError(f"{path}: integer values {low}…{high} do not fit int32; cast the array first")
        return array.astype(np.int32)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{path}: cannot write an array of dtype {array.dtype}; use an integer or float type")
    return array


def _nifti_codes(like: Volume | None) -> tuple[int, int]:
    """The (sform, qform) codes to write: the reference file's when it is a NIfTI, else 1 (scanner) for both."""
    if like is not None and like.path is not None and _suffix(like.path) in NIFTI_SUFFIXES and like.path.is_file():
        try:
            header = nib.load(str(like.path)).header
            sform, qform = int(header["sform_code"]), int(header["qform_code"])
            code = sform or qform
            if code:
                return code, code  # same code for both, so readers agree whichever they prefer
        except Exception:  # the reference is only a source of header codes: fall back to scanner space
            pass
    return 1, 1


def _write_nifti(array: np.ndarray, affine: np.ndarray, path: Path, like: Volume | None) -> None:
    image = nib.Nifti1Image(array, affine)
    sform_code, qform_code = _nifti_codes(like)
    # sform carries the affine exactly (shears included); qform its nearest rigid+zoom, for qform-only readers.
    image.set_sform(affine, code=sform_code)
    image.set_qform(affine, code=qform_code)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    nib.save(image, str(path))


def _write_itk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    vector = array.ndim == 4
    # (X, Y, Z[, C]) → SimpleITK's C order (Z, Y, X[, C]).
    data = np.ascontiguousarray(np.transpose(array, (2, 1, 0, 3) if vector else (2, 1, 0)))
    sitk = _sitk(path)
    image = sitk.GetImageFromArray(data, isVector=vector)
    matrix = affine[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (_LPS_TO_RAS @ matrix / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in _LPS_TO_RAS @ affine[:3, 3]))
    sitk.WriteImage(image, str(path), useCompression=True)


def write_volume(volume: Volume, path: str | os.PathLike, *, like: Volume | None = None) -> Path:
    """Write a volume with its affine, atomically.

    Args:
        volume: array ``(X, Y, Z)`` or ``(X, Y, Z, C)`` and its voxel → RAS+ affine, written exactly (NIfTI
            sform and qform both set with the same code; ``.nrrd``/``.mha`` get the equivalent LPS origin,
            spacing and direction).
        path: ``.nii``, ``.nii.gz``, ``.nrrd`` or ``.mha`` (single-file formats, so the write can be atomic).
            Missing parent folders are created.
        like: the image this one belongs to (e.g. the input a prediction was made on). Its spatial shape
            must equal ``volume``'s, and a NIfTI reference lends its sform/qform code (scanner vs aligned).

    Returns:
        The path written.

    The data go to a temporary file in the same folder (named ``.<name>.<random>.tmp<ext>`` so the writer
    still picks the format from the extension) that replaces ``path`` only once complete: an error leaves
    neither a partial file nor a changed ``path``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in WRITE_SUFFIXES:
        # .mhd/.nhdr name a separate data file inside the header, which an atomic rename would orphan.
        raise InputError(
            f"{path}: unsupported output extension {suffix or '(none)'!r}; use one of {', '.join(WRITE_SUFFIXES)}"
        )
    if volume.array.ndim not in (3, 4):
        raise InputError(f"{path}: array must be (X, Y, Z) or (X, Y, Z, C); got shape {volume.array.shape}")
    if not np.all(np.isfinite(volume.affine)) or abs(np.linalg.det(volume.affine[:3, :3])) < 1e-12:
        raise InputError(
            f"{path}: the affine must be finite and invertible; got {volume.affine.tolist()} — check the Volume"
        )
    if like is not None and like.shape != volume.shape:
        raise InputError(
            f"{path}: array spatial shape {volume.shape} differs from the reference image's {like.shape}"
            f"{f' ({like.path})' if like.path else ''}; restore it to the reference grid first"
        )
    array = _writable_array(volume.array, path)
    with atomic_path(path) as temporary:
        if suffix in NIFTI_SUFFIXES:
            _write_nifti(array, volume.affine, temporary, like)
        else:
            _write_itk(array, volume.affine, temporary)
    return path


def grid_mismatch(path: Path, shape: tuple, affine: np.ndarray, ref_path: Path, ref_shape: tuple,
                  ref_affine: np.ndarray, fix: str = "resample or copy the geometry so they match") -> list[str]:
    """Whether an image lies on the grid of a reference: ``[]`` if it does, else one line naming ``path``
    and ending in ``fix``.

    Same shape, origin within 1e-3 mm, direction cosines within 1e-4 and spacing within a relative 1e-4.
    """
    if tuple(shape) != tuple(ref_shape):
        return [f"{path}: spatial shape {tuple(shape)} differs from {ref_path.name}'s {tuple(ref_shape)}; "
                "resample it onto the same grid"]
    spacing, ref_spacing = np.linalg.norm(affine[:3, :3], axis=0), np.linalg.norm(ref_affine[:3, :3], axis=0)
    origin_mm = float(np.max(np.abs(affine[:3, 3] - ref_affine[:3, 3])))
    direction = float(np.max(np.abs(affine[:3, :3] / spacing - ref_affine[:3, :3] / ref_spacing)))
    spacing_rel = float(np.max(np.abs(spacing - ref_spacing) / ref_spacing))
    if origin_mm > _TRANSLATION_TOL_MM or direction > _DIRECTION_TOL or spacing_rel > _SPACING_RTOL:
        return [f"{path}: affine differs from {ref_path.name}'s (origin by {origin_mm:.3g} mm, direction cosines "
                f"by {direction:.3g}, spacing by {spacing_rel:.3g} relative); {fix}"]
    return []

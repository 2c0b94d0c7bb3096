"""Tests for vol25d.io: geometry round trips, dimensionality rules, errors that name the file, atomic writes."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from vol25d import io as vio
from vol25d.errors import InputError
from vol25d.io import Volume, read_volume, write_volume


def oblique_affine() -> np.ndarray:
    """An oblique, LPS-like flipped, anisotropic voxel → RAS affine (rotation about two axes)."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rot_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rot_z @ rot_x @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [12.5, -40.25, 63.0]
    return affine


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii", "img.mha", "img.nrrd"])
def test_round_trip_keeps_array_and_affine(tmp_path, name):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(7, 6, 5)).astype(np.float32)
    affine = oblique_affine()
    written = write_volume(Volume(array, affine), tmp_path / name)
    back = read_volume(written)
    assert back.array.shape == (7, 6, 5)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, array, atol=1e-6)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [0.7, 0.9, 2.5], atol=1e-5)
    assert back.path == tmp_path / name


def test_nifti_header_has_sform_and_qform_with_the_same_code(tmp_path):
    write_volume(Volume(np.zeros((4, 4, 4), np.uint8), oblique_affine()), tmp_path / "a.nii.gz")
    header = nib.load(str(tmp_path / "a.nii.gz")).header
    assert int(header["sform_code"]) == int(header["qform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), oblique_affine(), atol=1e-5)


def test_mha_geometry_is_lps(tmp_path):
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    write_volume(Volume(np.zeros((3, 4, 5), np.int16), affine), tmp_path / "a.mha")
    image = sitk.ReadImage(str(tmp_path / "a.mha"))
    assert image.GetSize() == (3, 4, 5)
    np.testing.assert_allclose(image.GetOrigin(), [-10.0, -20.0, 30.0])
    np.testing.assert_allclose(image.GetSpacing(), [2.0, 3.0, 4.0])
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), np.diag([-1.0, -1.0, 1.0]))


def test_integer_labels_keep_their_dtype_and_dtype_argument_casts(tmp_path):
    labels = np.arange(60, dtype=np.int64).reshape(3, 4, 5) % 3
    write_volume(Volume(labels, np.eye(4)), tmp_path / "lab.nii.gz")
    back = read_volume(tmp_path / "lab.nii.gz")
    assert np.issubdtype(back.array.dtype, np.integer)
    np.testing.assert_array_equal(back.array, labels)
    assert read_volume(tmp_path / "lab.nii.gz", dtype=np.float64).array.dtype == np.float64


def test_multichannel_round_trip_nifti_and_mha(tmp_path):
    labels = (np.random.default_rng(1).random((5, 4, 3, 2)) > 0.5).astype(np.uint8)
    for name in ("ml.nii.gz", "ml.mha"):
        write_volume(Volume(labels, oblique_affine()), tmp_path / name)
        back = read_volume(tmp_path / name)
        assert back.array.shape == (5, 4, 3, 2)
        assert back.shape == (5, 4, 3)
        np.testing.assert_array_equal(back.array, labels)
        np.testing.assert_allclose(back.affine, oblique_affine(), atol=1e-5)


def test_4d_with_one_volume_reads_as_3d(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.float32), np.eye(4)), str(tmp_path / "one.nii.gz"))
    assert read_volume(tmp_path / "one.nii.gz").array.shape == (4, 5, 6)


def test_dicom_series_folder(tmp_path):
    array = (np.arange(4 * 5 * 3) % 7).reshape(4, 5, 3).astype(np.int16)  # (X, Y, Z)
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(3):
        slice_ = sitk.GetImageFromArray(array[:, :, k].T.copy())
        slice_.SetSpacing((0.8, 0.8))
        for key, value in {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1", "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": f"0\\0\\{2.0 * k}", "0020|0013": str(k + 1),
            "0008|0060": "MR", "0028|0030": "0.8\\0.8", "0018|0050": "2.0",
        }.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(series / f"s{k}.dcm"))
        writer.Execute(slice_)
    volume = read_volume(series)
    assert volume.shape == (4, 5, 3)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, [0.8, 0.8, 2.0], atol=1e-4)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        read_volume(tmp_path / "nothere.nii.gz")


@pytest.mark.parametrize("name", ["notimage.nii.gz", "notimage.nii", "notimage.mha"])
def test_not_an_image(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image at all" * 20)
    with pytest.raises(InputError, match=name) as info:
        read_volume(tmp_path / name)
    assert "\n" not in str(info.value)


def test_truncated_nifti(tmp_path):
    write_volume(Volume(np.random.default_rng(0).random((16, 16, 16)), np.eye(4)), tmp_path / "full.nii.gz")
    raw = gzip.decompress((tmp_path / "full.nii.gz").read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_volume(tmp_path / "cut.nii.gz")


def test_2d_image_rejected(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 7), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="flat.nii.gz.*2-D"):
        read_volume(tmp_path / "flat.nii.gz")
    sitk.WriteImage(sitk.Image(5, 6, sitk.sitkUInt8), str(tmp_path / "flat.mha"))
    with pytest.raises(InputError, match="flat.mha.*2-D"):
        read_volume(tmp_path / "flat.mha")


def test_unsupported_extension(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="scan.png.*'.png'"):
        read_volume(tmp_path / "scan.png")
    with pytest.raises(InputError, match="out.png"):
        write_volume(Volume(np.zeros((2, 2, 2)), np.eye(4)), tmp_path / "out.png")


def test_write_rejects_shape_mismatch_with_reference(tmp_path):
    reference = Volume(np.zeros((4, 4, 4)), np.eye(4), tmp_path / "ref.nii.gz")
    with pytest.raises(InputError, match=r"pred.nii.gz.*\(3, 4, 4\).*\(4, 4, 4\)"):
        write_volume(Volume(np.zeros((3, 4, 4)), np.eye(4)), tmp_path / "pred.nii.gz", like=reference)


def test_write_takes_reference_nifti_code(tmp_path):
    image = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), np.eye(4))
    image.set_sform(np.eye(4), code=2)
    image.set_qform(np.eye(4), code=2)
    nib.save(image, str(tmp_path / "ref.nii.gz"))
    reference = read_volume(tmp_path / "ref.nii.gz")
    write_volume(Volume(np.ones((3, 3, 3), np.uint8), reference.affine), tmp_path / "p.nii.gz", like=reference)
    header = nib.load(str(tmp_path / "p.nii.gz")).header
    assert int(header["sform_code"]) == int(header["qform_code"]) == 2


@pytest.mark.parametrize("name", ["out.nii.gz", "out.mha"])
def test_failed_write_leaves_no_file(tmp_path, monkeypatch, name):
    def half_write_then_fail(*args, **kwargs):
        target = str(args[1])
        with open(target, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(vio.nib, "save", half_write_then_fail)
    monkeypatch.setattr(vio._sitk(), "WriteImage", half_write_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_volume(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.nii.gz"
    write_volume(Volume(np.full((3, 3, 3), 5.0, np.float32), np.eye(4)), target)
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(vio.nib, "save", fail)
    with pytest.raises(OSError):
        write_volume(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def test_image_suffix_is_the_one_list_of_endings():
    from vol25d.io import READ_SUFFIXES, image_suffix

    assert [image_suffix(f"a{s}") for s in READ_SUFFIXES] == list(READ_SUFFIXES)
    assert image_suffix("CT_01_0000.NII.GZ") == ".NII.GZ" and image_suffix("scan.nhdr") == ".nhdr"
    assert image_suffix("notes.txt") is None and image_suffix(".nii.gz") is None and image_suffix("scan.raw") is None


def test_a_dicom_folder_is_known_by_its_preamble_not_its_endings(tmp_path):
    from vol25d.io import is_dicom_folder

    (tmp_path / "nifti").mkdir()
    (tmp_path / "nifti" / "a_0000.nii.gz").write_bytes(b"\0" * 128 + b"DICM")  # an image ending: not opened
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "README").write_text("not an image")
    assert is_dicom_folder(tmp_path / "export") and not is_dicom_folder(tmp_path / "nifti")
    assert not is_dicom_folder(tmp_path / "text") and not is_dicom_folder(tmp_path / "nowhere")


def test_grid_mismatch_is_one_line_naming_the_file_and_the_fix(tmp_path):
    from vol25d.io import grid_mismatch

    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    assert grid_mismatch(tmp_path / "a.nii.gz", (4, 5, 6), affine, tmp_path / "b.nii.gz", (4, 5, 6), affine) == []
    shifted = affine.copy()
    shifted[:3, 3] = [0.0, 0.002, 0.0]
    (line,) = grid_mismatch(tmp_path / "a.nii.gz", (4, 5, 6), shifted, tmp_path / "b.nii.gz", (4, 5, 6), affine,
                            "fix it")
    assert line.startswith(str(tmp_path / "a.nii.gz")) and "b.nii.gz's" in line and line.endswith("fix it")
    (line,) = grid_mismatch(tmp_path / "a.nii.gz", (4, 5, 7), affine, tmp_path / "b.nii.gz", (4, 5, 6), affine)
    assert "spatial shape (4, 5, 7)" in line

"""vol25d.data.gitract on a small competition-shaped folder of real 16-bit PNGs and a train.csv."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from vol25d.data.gitract import (
    CLASSES,
    convert_gitract,
    list_test_slices,
    load_slice_index,
    parse_slice_name,
    read_gitract_case,
    read_gitract_test_case,
    read_train_csv,
    rle_decode,
    rle_encode,
    submission_rows,
    write_submission,
)
from vol25d.data.dataset import load_dataset
from vol25d.errors import InputError


def _reference_rle(mask: np.ndarray) -> str:
    """A deliberately naive encoder (pixel loop over the row-major slice), independent of rle_encode."""
    flat = [int(v) for row in mask for v in row]
    pairs, start = [], None
    for i, value in enumerate(flat + [0], start=1):
        if value and start is None:
            start = i
        elif not value and start is not None:
            pairs += [start, i - start]
            start = None
    return " ".join(map(str, pairs))


# (case, case_day, W, H, pw, ph, slice numbers): non-square, W ≠ H, pw ≠ ph, so swapped axes show.
TRAIN_DAYS = [
    ("case1", "case1_day0", 40, 32, 1.50, 1.60, range(1, 7)),
    ("case1", "case1_day3", 40, 32, 1.50, 1.60, range(1, 8)),
    ("case2", "case2_day1", 32, 40, 1.63, 1.63, range(1, 9)),
]
TEST_DAYS = [("case3", "case3_day2", 40, 32, 1.50, 1.50, range(1, 7))]


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint16)).save(path)


def _slice_path(root: Path, split, case, case_day, w, h, pw, ph, number) -> Path:
    return root / split / case / case_day / "scans" / f"slice_{number:04d}_{w}_{h}_{pw:.2f}_{ph:.2f}.png"


@pytest.fixture
def competition(tmp_path):
    """``src`` with train/, test/ and train.csv; returns (src, pixels, masks) keyed by id."""
    rng = np.random.default_rng(0)
    src = tmp_path / "competition"
    pixels, masks, csv_rows = {}, {}, []
    for split, days in (("train", TRAIN_DAYS), ("test", TEST_DAYS)):
        for case, case_day, w, h, pw, ph, numbers in days:
            for number in numbers:
                image = rng.integers(0, 65535, size=(h, w), dtype=np.uint16)  # values above int16 too
                slice_id = f"{case_day}_slice_{number:04d}"
                _write_png(_slice_path(src, split, case, case_day, w, h, pw, ph, number), image)
                pixels[slice_id] = image
                if split == "test":
                    continue
                large = np.zeros((h, w), np.uint8)
                small = np.zeros((h, w), np.uint8)
                stomach = np.zeros((h, w), np.uint8)
                if number % 3:  # every third slice stays empty in all classes
                    large[2 + number : 12 + number, 3:20] = 1
                    small[8:16, 10 + number : 30] = 1  # overlaps large_bowel
                    stomach[h - 3 :, w - 5 :] = 1  # touches the last row and column
                    stomach[0, 0] = 1  # the very first pixel
                for name, mask in zip(CLASSES, (large, small, stomach)):
                    masks[(slice_id, name)] = mask
                    csv_rows.append((slice_id, name, _reference_rle(mask)))
    with (src / "train.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "class", "segmentation"))
        writer.writerows(csv_rows)
    return src, pixels, masks


# --- RLE --------------------------------------------------------------------------------------------


def test_rle_decode_is_row_major_and_one_indexed():
    # (H, W) = (2, 3): pixels 2, 3 (row 0, columns 1–2) and 6 (row 1, column 2).
    expected = np.array([[0, 1, 1], [0, 0, 1]], np.uint8)
    decoded = rle_decode("2 2 6 1", (2, 3))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected)
    assert rle_encode(expected) == "2 2 6 1"
    assert rle_encode(np.zeros((2, 3))) == ""
    np.testing.assert_array_equal(rle_decode("", (2, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 5", "odd number of values"),
        ("1 x", "'x' is not a positive integer"),
        ("1 -2", "'-2' is not a positive integer"),
        ("1.5 2", "'1.5' is not a positive integer"),
        ("0 2", "must be ≥ 1"),
        ("3 0", "must be ≥ 1"),
        ("5 3", "ends at pixel 7, past the 2×3 = 6 pixels"),
        ("1 99999999999999999999999", "past the 2×3 = 6 pixels"),
        ("4 1 1 1", "unsorted or overlap"),
        ("1 3 2 2", "unsorted or overlap"),
    ],
)
def test_rle_decode_rejects_malformed(rle, message):
    with pytest.raises(InputError, match=message) as error:
        rle_decode(rle, (2, 3), name="train.csv id case1_day0_slice_0001 class stomach")
    assert "case1_day0_slice_0001" in str(error.value)


@settings(max_examples=150, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 1)))
def test_rle_round_trip_mask(mask):
    encoded = rle_encode(mask)
    assert encoded == _reference_rle(mask)
    np.testing.assert_array_equal(rle_decode(encoded, mask.shape), mask)


@st.composite
def _valid_rle(draw):
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    size, pairs, position = height * width, [], 1  # position: first pixel a run may start at
    while position <= size and draw(st.booleans()):
        start = draw(st.integers(position, size))
        length = draw(st.integers(1, size - start + 1))
        pairs += [start, length]
        position = start + length + 1  # a gap of at least one pixel: runs are maximal
    return " ".join(map(str, pairs)), (height, width)


@settings(max_examples=150, deadline=None)
@given(_valid_rle())
def test_rle_round_trip_string(case):
    rle, shape = case
    assert rle_encode(rle_decode(rle, shape)) == rle


# --- slice names ------------------------------------------------------------------------------------


def test_parse_slice_name():
    item = parse_slice_name("x/slice_0012_266_310_1.50_1.63.png", "case123_day20")
    assert (item.number, item.width, item.height) == (12, 266, 310)
    assert (item.pixel_width_mm, item.pixel_height_mm) == (1.50, 1.63)
    assert item.id == "case123_day20_slice_0012"


@pytest.mark.parametrize(
    "name",
    ["slice_0001_266_266_1.50.png", "slice_0001_266_266_1.50_1.50.jpg", "slice_a_266_266_1.50_1.50.png",
     "scan_0001_266_266_1.50_1.50.png", "slice_0001_0_266_1.50_1.50.png"],
)
def test_parse_slice_name_rejects(name):
    with pytest.raises(InputError) as error:
        parse_slice_name(name)
    assert repr(name) in str(error.value)


def test_bad_slice_name_in_a_case_names_the_file(competition):
    src, _, _ = competition
    scans = src / "train" / "case1" / "case1_day0" / "scans"
    (scans / "slice_0099_40_32.png").write_bytes(b"")
    with pytest.raises(InputError, match="slice_0099_40_32.png"):
        read_gitract_case(scans.parent, {})


# --- reading ----------------------------------------------------------------------------------------


def test_read_case_voxel_by_voxel(competition):
    src, pixels, masks = competition
    rles = read_train_csv(src / "train.csv")
    for case, case_day, w, h, pw, ph, numbers in TRAIN_DAYS:
        image, label = read_gitract_case(src / "train" / case / case_day, rles)
        assert image.array.shape == (w, h, len(numbers)) and image.array.dtype == np.uint16  # the PNGs' type
        assert label.array.shape == (w, h, len(numbers), 3) and label.array.dtype == np.uint8
        np.testing.assert_allclose(image.spacing, (pw, ph, 3.0))
        np.testing.assert_allclose(image.affine, np.diag([pw, ph, 3.0, 1.0]))
        np.testing.assert_array_equal(label.affine, image.affine)
        for z, number in enumerate(numbers):
            slice_id = f"{case_day}_slice_{number:04d}"
            for y in (0, h - 1, h // 2):
                for x in (0, w - 1, w // 3):
                    assert image.array[x, y, z] == pixels[slice_id][y, x]
            np.testing.assert_array_equal(image.array[:, :, z], pixels[slice_id].T)
            for k, name in enumerate(CLASSES):
                np.testing.assert_array_equal(label.array[:, :, z, k], masks[(slice_id, name)].T)
        # Overlap survives: some voxel is both large and small bowel.
        assert np.any(label.array[..., 0] & label.array[..., 1])


def test_read_case_names_malformed_rle(competition):
    src, _, _ = competition
    rles = {"case1_day0_slice_0002": {"small_bowel": "10 5 12 3"}}
    with pytest.raises(InputError, match="case1_day0_slice_0002 class small_bowel.*overlap"):
        read_gitract_case(src / "train" / "case1" / "case1_day0", rles)


def test_read_train_csv_rejects_unknown_class(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("id,class,segmentation\ncase1_day0_slice_0001,liver,1 2\n")
    with pytest.raises(InputError, match="line 2 .*case1_day0_slice_0001.*'liver'"):
        read_train_csv(path)


def test_test_slices_and_test_case(competition):
    src, pixels, _ = competition
    slices = list_test_slices(src)
    assert [s.id for s in slices] == [f"case3_day2_slice_{n:04d}" for n in range(1, 7)]
    assert {(s.height, s.width) for s in slices} == {(32, 40)}
    image, case_slices = read_gitract_test_case(src / "test" / "case3" / "case3_day2")
    assert image.array.shape == (40, 32, 6)
    np.testing.assert_array_equal(image.array[:, :, 4], pixels["case3_day2_slice_0005"].T)
    assert [s.number for s in case_slices] == list(range(1, 7))
    assert list_test_slices(src / "nowhere") == []


# --- conversion -------------------------------------------------------------------------------------


def test_convert_writes_msd_layout(competition, tmp_path):
    src, pixels, masks = competition
    out = convert_gitract(src, tmp_path / "msd")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["multi_label"] is True
    assert meta["labels"] == {"background": 0, "large_bowel": 1, "small_bowel": 2, "stomach": 3}
    assert meta["channel_names"] == {"0": "MRI"}
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert meta["case_groups"] == {"case1_day0": "case1", "case1_day3": "case1", "case2_day1": "case2"}
    assert [c.group for c in load_dataset(out).cases] == ["case1", "case1", "case2"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "case1_day0_0000.nii.gz", "case1_day3_0000.nii.gz", "case2_day1_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "case1_day0.nii.gz", "case1_day3.nii.gz", "case2_day1.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["case3_day2_0000.nii.gz"]

    image = nib.load(out / "imagesTr" / "case2_day1_0000.nii.gz")
    label = nib.load(out / "labelsTr" / "case2_day1.nii.gz")
    assert image.shape == (32, 40, 8) and label.shape == (32, 40, 8, 3)
    assert image.get_data_dtype() == np.uint16  # the PNGs' type: half the disk of float32, values exact
    np.testing.assert_allclose(image.header.get_zooms()[:3], (1.63, 1.63, 3.0), rtol=1e-6)
    data, labels = np.asarray(image.dataobj), np.asarray(label.dataobj)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(data[:, :, 2], pixels["case2_day1_slice_0003"].T)
    np.testing.assert_array_equal(labels[:, :, 4, 2], masks[("case2_day1_slice_0005", "stomach")].T)

    index = load_slice_index(out)
    assert index["case3_day2"] == {"split": "test", "patient": "case3", "height": 32, "width": 40,
                                   "pixel_spacing_mm": [1.5, 1.5], "slice_numbers": [1, 2, 3, 4, 5, 6]}
    assert index["case1_day3"]["split"] == "train" and len(index["case1_day3"]["slice_numbers"]) == 7


# --- submission -------------------------------------------------------------------------------------


def test_submission_rows_round_trip(competition, tmp_path):
    src, _, masks = competition
    rles = read_train_csv(src / "train.csv")
    rows = []
    for case, case_day, w, h, _, _, numbers in TRAIN_DAYS:
        _, label = read_gitract_case(src / "train" / case / case_day, rles)
        rows += submission_rows(case_day, label.array.astype(bool), list(numbers))
    assert len(rows) == len(masks) and len({(r[0], r[1]) for r in rows}) == len(masks)
    assert rows[:3] == [("case1_day0_slice_0001", name, rles["case1_day0_slice_0001"][name]) for name in CLASSES]
    for slice_id, name, rle in rows:
        assert rle == rles[slice_id][name]
        np.testing.assert_array_equal(rle_decode(rle, masks[(slice_id, name)].shape), masks[(slice_id, name)])
    assert any(rle == "" for _, _, rle in rows)

    path = write_submission(rows, tmp_path / "sub" / "submission.csv")
    text = path.read_text()
    assert text.startswith("id,class,predicted\ncase1_day0_slice_0001,large_bowel,")
    assert "case1_day0_slice_0003,stomach,\n" in text  # an empty mask is an empty field
    with path.open(newline="") as handle:
        assert [tuple(r) for r in csv.reader(handle)][1:] == rows
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]  # no temporary left


def test_submission_rows_validates_shape():
    with pytest.raises(InputError, match="case1_day0: prediction has 4 slices but 3 slice numbers"):
        submission_rows("case1_day0", np.zeros((5, 6, 4, 3), bool), [1, 2, 3])
    with pytest.raises(InputError, match=r"must be \(X, Y, Z, 3\)"):
        submission_rows("case1_day0", np.zeros((5, 6, 4)), [1, 2, 3, 4])


def test_convert_gitract_command(competition, tmp_path):
    src, _, _ = competition
    result = subprocess.run([sys.executable, "-m", "vol25d", "-q", "convert-gitract", str(src), str(tmp_path / "msd")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "msd" / "dataset.json").read_text())["multi_label"] is True
    check = subprocess.run([sys.executable, "-m", "vol25d", "check-data", str(tmp_path / "msd")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    missing = subprocess.run([sys.executable, "-m", "vol25d", "convert-gitract", str(tmp_path / "absent"), str(tmp_path / "x")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "absent" in missing.stderr and "Traceback" not in missing.stderr


def test_submission_rows_for_test_set(competition, tmp_path):
    from vol25d.data.gitract import submission_rows_for_test_set

    src, pixels, _ = competition
    seen = []

    def segment(image):  # bright pixels are stomach, dark ones large bowel, small bowel stays empty
        seen.append(image.shape)
        array = image.array
        return np.stack([array < 20000, np.zeros_like(array, bool), array > 50000], axis=-1)

    rows = submission_rows_for_test_set(src, segment)
    assert seen == [(40, 32, 6)]
    ids = [s.id for s in list_test_slices(src)]
    assert [(r[0], r[1]) for r in rows] == [(i, name) for i in ids for name in CLASSES]
    for slice_id, name, rle in rows:
        png = pixels[slice_id]  # (H, W) = (32, 40)
        expected = {"large_bowel": png < 20000, "small_bowel": np.zeros_like(png, bool), "stomach": png > 50000}
        np.testing.assert_array_equal(rle_decode(rle, png.shape), expected[name])
    assert all(rle == "" for _, name, rle in rows if name == "small_bowel")

    with pytest.raises(InputError, match=r"case3_day2: segment returned a mask of shape \(32, 40, 6, 3\); "
                                         r"expected \(40, 32, 6, 3\)"):
        submission_rows_for_test_set(src, lambda image: np.zeros((32, 40, 6, 3), bool))
    assert submission_rows_for_test_set(tmp_path / "nowhere", segment) == []


def test_an_unreadable_test_case_day_gets_empty_rows_and_one_warning(competition, tmp_path, caplog):
    from vol25d.data.gitract import submission_rows_for_test_set

    src, _, _ = competition
    bad = src / "test" / "case4" / "case4_day1" / "scans"
    bad.mkdir(parents=True)
    for number in (1, 2, 3):
        _write_png(bad / f"slice_{number:04d}_40_32_1.50_1.50.png", np.full((32, 40), 100 * number, np.uint16))
    truncated = bad / "slice_0002_40_32_1.50_1.50.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # a PNG cut off after its header
    (bad / "slice_0004_40_32_1.50_1.50.png").write_bytes(b"not a png at all")
    (src / "sample_submission.csv").write_text("id,class,predicted\ncase9_day0_slice_0001,stomach,\n")

    with caplog.at_level("WARNING", logger="vol25d.data.gitract.submission"):
        rows = submission_rows_for_test_set(src, lambda image: np.ones((*image.shape, 3), bool))
    bad_ids = [f"case4_day1_slice_{n:04d}" for n in (1, 2, 3, 4)]
    good_ids = [f"case3_day2_slice_{n:04d}" for n in range(1, 7)]
    assert [(r[0], r[1]) for r in rows] == [(i, name) for i in good_ids + bad_ids for name in CLASSES] + [
        ("case9_day0_slice_0001", "stomach")]
    assert all(rle for slice_id, _, rle in rows if slice_id.startswith("case3_day2"))  # the good case-day segmented
    assert all(rle == "" for slice_id, _, rle in rows if not slice_id.startswith("case3_day2"))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].startswith("case4_day1: cannot be read (") and "is not a readable PNG" in warnings[0]
    assert "its 4 slices get empty predictions" in warnings[0]
    assert "1 rows of" in warnings[1] and "sample_submission.csv" in warnings[1]


def test_convert_leaves_out_the_mislabelled_case_days(competition, tmp_path, caplog):
    import shutil

    from vol25d.data.gitract import MISLABELLED_CASE_DAYS

    assert MISLABELLED_CASE_DAYS == ("case7_day0", "case81_day30")
    src, _, _ = competition
    shutil.copytree(src / "train" / "case2" / "case2_day1", src / "train" / "case7" / "case7_day0")
    with (src / "train.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(("case7_day0_slice_0001", "stomach", "1 5"))
    with caplog.at_level("INFO", logger="vol25d.data.gitract.convert"):
        out = convert_gitract(src, tmp_path / "msd")
    meta = json.loads((out / "dataset.json").read_text())
    assert "case7_day0" not in meta["case_groups"] and meta["numTraining"] == 3
    assert not (out / "imagesTr" / "case7_day0_0000.nii.gz").exists() and "case7_day0" not in load_slice_index(out)
    messages = [r.getMessage() for r in caplog.records]
    assert "left out of training: case7_day0 (known wrong masks)" in messages
    assert not any("have no slice PNG" in m for m in messages)  # its train.csv rows are not "unmatched"
    kept = convert_gitract(src, tmp_path / "all", exclude=())
    assert "case7_day0" in json.loads((kept / "dataset.json").read_text())["case_groups"]

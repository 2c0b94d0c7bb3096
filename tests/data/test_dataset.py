"""Tests for vol25d.data.dataset: listing the MSD/nnU-Net layout, splitting, channel grouping, checking files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vol25d.data.check import check_dataset
from vol25d.data.dataset import Case, group_channel_files, load_dataset, split_cases
from vol25d.errors import InputError

SHAPE = (6, 5, 4)


def oblique_affine() -> np.ndarray:
    """Anisotropic, LPS-like flipped, slightly rotated voxel → RAS affine."""
    angle = np.deg2rad(12.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-0.6, -0.6, 1.5])
    affine[:3, 3] = [30.0, -12.5, 7.25]
    return affine


def save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, oblique_affine() if affine is None else affine), str(path))
    return path


def make_dataset(root: Path, n: int = 4, channels: int = 1, multi_label: bool = False, **extra) -> Path:
    """A valid tiny dataset: float32 images, uint8 labels, all on one oblique grid."""
    rng = np.random.default_rng(0)
    labels = {"background": 0, "artery": 1, "vein": 2}
    for i in range(n):
        for c in range(channels):
            save(rng.normal(size=SHAPE).astype(np.float32), root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz")
        if multi_label:
            label = (rng.random(SHAPE + (2,)) > 0.7).astype(np.uint8)
        else:
            label = rng.integers(0, 3, size=SHAPE).astype(np.uint8)
        save(label, root / "labelsTr" / f"case_{i:03d}.nii.gz")
    meta = {
        "channel_names": {str(c): f"MR{c}" for c in range(channels)},
        "labels": labels,
        "numTraining": n,
        "file_ending": ".nii.gz",
        **({"multi_label": True} if multi_label else {}),
        **extra,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


def only_problem(root: Path) -> str:
    problems = check_dataset(root)
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------------------------------ listing


def test_good_dataset_loads_and_passes(dataset):
    info = load_dataset(dataset)
    assert info.root == dataset
    assert info.channel_names == ["MR0"]
    assert info.labels == {"background": 0, "artery": 1, "vein": 2}
    assert info.class_names == ["artery", "vein"]
    assert info.multi_label is False and info.file_ending == ".nii.gz" and info.num_training == 4
    assert [case.name for case in info.cases] == ["case_000", "case_001", "case_002", "case_003"]
    assert info.cases[2].image_paths == [dataset / "imagesTr" / "case_002_0000.nii.gz"]
    assert info.cases[2].label_path == dataset / "labelsTr" / "case_002.nii.gz"
    assert info.test_cases == []
    assert check_dataset(dataset) == []


def test_channels_are_listed_in_order_and_test_cases_found(tmp_path):
    root = make_dataset(tmp_path / "ds", n=2, channels=3)
    for c in (1, 0):
        save(np.zeros(SHAPE, np.float32), root / "imagesTs" / f"new_{c:04d}.nii.gz")
    save(np.zeros(SHAPE, np.float32), root / "imagesTs" / "new_0002.nii.gz")
    info = load_dataset(root)
    assert [p.name for p in info.cases[1].image_paths] == [f"case_001_{c:04d}.nii.gz" for c in range(3)]
    assert len(info.test_cases) == 1 and info.test_cases[0].label_path is None
    assert [p.name for p in info.test_cases[0].image_paths] == [f"new_{c:04d}.nii.gz" for c in range(3)]
    assert check_dataset(root) == []


def test_hidden_files_are_ignored(dataset):
    (dataset / "imagesTr" / "._case_000_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (dataset / "labelsTr" / ".DS_Store").write_bytes(b"junk")
    assert len(load_dataset(dataset).cases) == 4
    assert check_dataset(dataset) == []


def test_msd_style_labels_and_modality_are_accepted(dataset):
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "artery", "2": "vein"}
    meta["modality"] = meta.pop("channel_names")
    (dataset / "dataset.json").write_text(json.dumps(meta))
    info = load_dataset(dataset)
    assert info.labels == {"background": 0, "artery": 1, "vein": 2} and info.channel_names == ["MR0"]


def test_multi_label_dataset(tmp_path):
    root = make_dataset(tmp_path / "ds", n=2, multi_label=True)
    info = load_dataset(root)
    assert info.multi_label is True and info.class_names == ["artery", "vein"]
    assert check_dataset(root) == []
    save(np.zeros(SHAPE, np.uint8), root / "labelsTr" / "case_000.nii.gz")  # 3-D where 4-D is declared
    save(np.zeros(SHAPE + (3,), np.uint8), root / "labelsTr" / "case_001.nii.gz")  # 3 channels, 2 classes
    problems = check_dataset(root)
    assert len(problems) == 2
    assert "case_000.nii.gz" in problems[0] and "(X, Y, Z, 2)" in problems[0]
    assert "case_001.nii.gz" in problems[1] and "(6, 5, 4, 3)" in problems[1]


def test_multi_label_with_one_class_accepts_x_y_z_1(tmp_path):
    root = make_dataset(tmp_path / "ds", n=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(labels={"background": 0, "vessel": 1}, multi_label=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    save(np.ones(SHAPE + (1,), np.uint8), root / "labelsTr" / "case_000.nii.gz")
    save(np.ones(SHAPE, np.uint8), root / "labelsTr" / "case_001.nii.gz")
    assert check_dataset(root) == []


# ------------------------------------------------------------------------------------- one problem each


def test_missing_dataset_json(dataset):
    (dataset / "dataset.json").unlink()
    line = only_problem(dataset)
    assert str(dataset / "dataset.json") in line and "missing" in line
    with pytest.raises(InputError, match="dataset.json: missing"):
        load_dataset(dataset)


def test_missing_folder(tmp_path):
    assert "no such dataset folder" in only_problem(tmp_path / "nowhere")
    with pytest.raises(InputError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize("text, message", [
    ('{"channel_names": {"0": "MRA"}, "labels": ', "not valid JSON"),
    ('{"labels": {"background": 0, "vessel": 1}}', "channel_names"),
    ('{"channel_names": {"0": "MRA"}, "labels": {"background": 0, "vessel": 2}}', "without gaps"),
    ('{"channel_names": {"0": "MRA"}, "labels": {"background": 0, "tumour": [1, 2]}}', "region-based"),
])
def test_malformed_dataset_json(dataset, text, message):
    (dataset / "dataset.json").write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_dataset(dataset)
    assert "dataset.json" in str(error.value)
    assert message in only_problem(dataset)


def test_missing_images_folder(dataset):
    for path in (dataset / "imagesTr").iterdir():
        path.unlink()
    (dataset / "imagesTr").rmdir()
    line = only_problem(dataset)
    assert str(dataset / "imagesTr") in line and "folder missing" in line


def test_missing_label(dataset):
    (dataset / "labelsTr" / "case_001.nii.gz").unlink()
    line = only_problem(dataset)
    assert str(dataset / "labelsTr" / "case_001.nii.gz") in line and "label missing" in line
    with pytest.raises(InputError, match="case_001.nii.gz: label missing"):
        load_dataset(dataset)


def test_label_without_image(dataset):
    (dataset / "imagesTr" / "case_003_0000.nii.gz").unlink()
    problems = check_dataset(dataset)
    assert any(str(dataset / "labelsTr" / "case_003.nii.gz") in p and "without an image" in p for p in problems)
    assert any("numTraining is 4" in p and "3 cases" in p for p in problems)
    assert len(problems) == 2


def test_missing_channel_file(tmp_path):
    root = make_dataset(tmp_path / "ds", n=2, channels=2)
    (root / "imagesTr" / "case_000_0001.nii.gz").unlink()
    line = only_problem(root)  # its label is not also reported as orphaned
    assert str(root / "imagesTr" / "case_000_0001.nii.gz") in line and "missing" in line


def test_image_without_channel_suffix(dataset):
    save(np.zeros(SHAPE, np.float32), dataset / "imagesTr" / "extra.nii.gz")
    line = only_problem(dataset)
    assert "extra.nii.gz" in line and "extra_0000.nii.gz" in line


def test_wrong_file_ending(dataset):
    save(np.zeros(SHAPE, np.float32), dataset / "imagesTr" / "case_009_0000.nii")
    line = only_problem(dataset)
    assert "case_009_0000.nii" in line and "file_ending" in line


def test_shape_mismatch(dataset):
    save(np.zeros((6, 5, 3), np.uint8), dataset / "labelsTr" / "case_002.nii.gz")
    line = only_problem(dataset)
    assert str(dataset / "labelsTr" / "case_002.nii.gz") in line and "(6, 5, 3)" in line and "(6, 5, 4)" in line


def test_affine_mismatch_beyond_tolerance_only(dataset):
    shifted = oblique_affine()
    shifted[:3, 3] += [0.0, 2e-4, 0.0]  # within 1e-3 mm: fine
    save(np.zeros(SHAPE, np.uint8), dataset / "labelsTr" / "case_000.nii.gz", shifted)
    assert check_dataset(dataset) == []
    shifted[:3, 3] += [0.0, 0.01, 0.0]
    save(np.zeros(SHAPE, np.uint8), dataset / "labelsTr" / "case_000.nii.gz", shifted)
    line = only_problem(dataset)
    assert str(dataset / "labelsTr" / "case_000.nii.gz") in line and "affine differs" in line
    rotated = oblique_affine()
    rotated[:3, :3] = np.array([[1, 0, 0], [0, np.cos(1e-3), -np.sin(1e-3)],
                                [0, np.sin(1e-3), np.cos(1e-3)]]) @ rotated[:3, :3]
    save(np.zeros(SHAPE, np.uint8), dataset / "labelsTr" / "case_000.nii.gz", rotated)
    assert "direction cosines by 0.001" in only_problem(dataset)


def test_bad_label_value(dataset):
    label = np.zeros(SHAPE, np.uint8)
    label[1, 1, 1] = 5
    save(label, dataset / "labelsTr" / "case_003.nii.gz")
    line = only_problem(dataset)
    assert str(dataset / "labelsTr" / "case_003.nii.gz") in line and "[5]" in line


def test_nan_voxel(dataset):
    image = np.zeros(SHAPE, np.float32)
    image[2, 3, 1] = np.nan
    save(image, dataset / "imagesTr" / "case_001_0000.nii.gz")
    line = only_problem(dataset)
    assert str(dataset / "imagesTr" / "case_001_0000.nii.gz") in line and "1 NaN/Inf" in line


def test_4d_image_with_two_volumes(dataset):
    save(np.zeros(SHAPE + (2,), np.float32), dataset / "imagesTr" / "case_000_0000.nii.gz")
    line = only_problem(dataset)
    assert str(dataset / "imagesTr" / "case_000_0000.nii.gz") in line and "4-D with 2 volumes" in line


def test_truncated_file(dataset):
    path = dataset / "imagesTr" / "case_002_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    line = only_problem(dataset)
    assert str(path) in line and "truncated" in line


def test_all_problems_are_listed(dataset):
    image = np.zeros(SHAPE, np.float32)
    image[0, 0, 0] = np.inf
    save(image, dataset / "imagesTr" / "case_000_0000.nii.gz")
    (dataset / "labelsTr" / "case_001.nii.gz").unlink()
    save(np.full(SHAPE, 7, np.uint8), dataset / "labelsTr" / "case_002.nii.gz")
    problems = check_dataset(dataset)
    assert len(problems) == 3, problems
    assert any("case_000_0000.nii.gz" in p and "NaN/Inf" in p for p in problems)
    assert any("case_001.nii.gz" in p and "label missing" in p for p in problems)
    assert any("case_002.nii.gz" in p and "[7]" in p for p in problems)
    with pytest.raises(InputError, match="case_001.nii.gz: label missing") as error:
        load_dataset(dataset)  # only the listing problem is found without reading files
    assert "more problems" not in str(error.value)
    (dataset / "labelsTr" / "case_000.nii.gz").unlink()
    with pytest.raises(InputError, match=r"\(and 1 more problems: run `vol25d check-data"):
        load_dataset(dataset)


# ---------------------------------------------------------------------------------------------- splitting


def cases(n: int) -> list[Case]:
    return [Case(f"c{i:02d}", [Path(f"c{i:02d}_0000.nii.gz")], None) for i in range(n)]


@pytest.mark.parametrize("n, n_val", [(2, 1), (4, 1), (5, 1), (10, 2), (11, 2)])
def test_split_sizes(n, n_val):
    train, val = split_cases(cases(n), val_fraction=0.2, seed=0)
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(c.name for c in train + val) == [c.name for c in cases(n)]


def test_split_is_seeded_and_order_independent():
    train, val = split_cases(cases(10), seed=3)
    again_train, again_val = split_cases(list(reversed(cases(10))), seed=3)
    assert [c.name for c in val] == [c.name for c in again_val]
    assert [c.name for c in train] == [c.name for c in again_train]
    val_sets = {tuple(c.name for c in split_cases(cases(10), seed=s)[1]) for s in range(6)}
    assert len(val_sets) > 1


def test_split_small_and_bad_inputs():
    assert split_cases([], 0.2) == ([], [])
    train, val = split_cases(cases(1), 0.5)
    assert len(train) == 1 and val == []
    train, val = split_cases(cases(4), 0.9)
    assert len(train) == 1 and len(val) == 3
    with pytest.raises(ValueError, match="val_fraction"):
        split_cases(cases(4), 0.0)


def patient_days(days_per_patient: dict[str, int]) -> list[Case]:
    return [Case(f"{p}_day{d}", [Path(f"{p}_day{d}_0000.nii.gz")], None, group=p)
            for p, n in days_per_patient.items() for d in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_split_keeps_a_group_on_one_side(seed):
    days = patient_days({f"case{i}": 1 + i % 3 for i in range(10)})  # 1, 2 or 3 days per patient
    train, val = split_cases(days, val_fraction=0.2, seed=seed)
    train_groups, val_groups = {c.group for c in train}, {c.group for c in val}
    assert len(val_groups) == 2 and len(train_groups) == 8 and not train_groups & val_groups
    assert sorted(c.name for c in train + val) == sorted(c.name for c in days)


def test_split_by_a_group_function_and_without_groups():
    days = patient_days({"case1": 3, "case2": 3, "case3": 2})
    ungrouped = [Case(c.name, c.image_paths) for c in days]
    by_name = split_cases(ungrouped, val_fraction=0.4, seed=1, group=lambda case: case.name.split("_")[0])
    by_attribute = split_cases(days, val_fraction=0.4, seed=1)
    assert [[c.name for c in side] for side in by_name] == [[c.name for c in side] for side in by_attribute]
    assert len({c.name.split("_")[0] for c in by_name[1]}) == 1  # 0.4 × 3 patients → 1 patient
    # every case its own group: the split by case name that split_cases made before groups existed
    names = sorted(c.name for c in ungrouped)
    by_case = sorted(names[i] for i in np.random.default_rng(1).permutation(len(names))[:round(0.4 * len(names))])
    assert [c.name for c in split_cases(ungrouped, 0.4, 1)[1]] == by_case
    assert split_cases(patient_days({"case1": 4}), 0.5) == (patient_days({"case1": 4}), [])


def test_case_groups_come_from_dataset_json(tmp_path):
    root = make_dataset(tmp_path / "ds", n=3, case_groups={"case_000": "p1", "case_002": "p1"})
    info = load_dataset(root)
    assert [c.group for c in info.cases] == ["p1", None, "p1"]
    train, val = split_cases(info.cases, 0.5, seed=0)
    assert {c.name for c in train} in ({"case_000", "case_002"}, {"case_001"})
    assert check_dataset(root) == []
    (root / "dataset.json").write_text(json.dumps({**json.loads((root / "dataset.json").read_text()),
                                                   "case_groups": ["p1"]}))
    with pytest.raises(InputError, match="case_groups must map case names to group names"):
        load_dataset(root)


# ---------------------------------------------------------------------------------------------- grouping


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_group_channel_files(tmp_path):
    touch(tmp_path, "a_0001.nii.gz", "a_0000.nii.gz", "b_0000.nii.gz", "scan.nii.gz", "vol.mha", ".hidden.nii.gz",
          "notes.txt")
    grouped = group_channel_files(tmp_path, ".nii.gz")
    assert list(grouped) == ["a", "b", "scan"]
    assert grouped["a"] == [tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz"]
    assert grouped["scan"] == [tmp_path / "scan.nii.gz"]
    assert list(group_channel_files(tmp_path)) == ["a", "b", "scan", "vol"]  # any image suffix
    listed = group_channel_files([tmp_path / "b_0000.nii.gz", tmp_path / "vol.mha"])
    assert listed == {"b": [tmp_path / "b_0000.nii.gz"], "vol": [tmp_path / "vol.mha"]}
    labels = group_channel_files(tmp_path, ".nii.gz", split_channels=False)
    assert list(labels) == ["a_0000", "a_0001", "b_0000", "scan"]


def test_group_channel_files_errors(tmp_path):
    touch(tmp_path / "gap", "c_0000.nii.gz", "c_0002.nii.gz")
    with pytest.raises(InputError, match=r"c_0000.nii.gz: case 'c' has channels \[0, 2\] but not \[1\]"):
        group_channel_files(tmp_path / "gap", ".nii.gz")
    touch(tmp_path / "twice", "x.nii.gz", "x_0000.nii.gz")
    with pytest.raises(InputError, match="also given by"):
        group_channel_files(tmp_path / "twice", ".nii.gz")
    touch(tmp_path / "empty", "readme.txt")
    with pytest.raises(InputError, match="no image files"):
        group_channel_files(tmp_path / "empty", ".nii.gz")
    with pytest.raises(FileNotFoundError, match="missing"):
        group_channel_files(tmp_path / "missing")

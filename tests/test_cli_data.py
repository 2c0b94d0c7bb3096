"""The data commands: make-phantoms and check-data, in subprocesses."""

import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np


def vol25d(*args):
    return subprocess.run([sys.executable, "-m", "vol25d", *map(str, args)], capture_output=True, text=True)


def test_make_phantoms_is_deterministic(tmp_path):
    for name in ("a", "b"):
        assert vol25d("-q", "make-phantoms", tmp_path / name, "--n", 2, "--size", 16, "--seed", 5).returncode == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 5  # dataset.json, 2 images, 2 labels
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_check_data_passes_a_good_dataset(phantoms):
    result = vol25d("check-data", phantoms)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("every case is readable and consistent")


def test_check_data_lists_every_problem_and_exits_1(phantoms, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(phantoms, broken)
    (broken / "labelsTr" / "phantom_001.nii.gz").unlink()
    image = nib.load(broken / "imagesTr" / "phantom_002_0000.nii.gz")
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), broken / "imagesTr" / "phantom_002_0000.nii.gz")
    result = vol25d("check-data", broken)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert any("phantom_001" in line for line in lines)
    assert any("phantom_002_0000.nii.gz" in line and "NaN" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_evaluate_reads_class_names_written_the_msd_way(phantoms, tmp_path):
    """dataset.json labels as {"0": "background", "1": "vessel"} (MSD spelling) name the classes too."""
    import json

    refs = tmp_path / "ref"
    shutil.copytree(phantoms / "labelsTr", refs / "labelsTr")
    (refs / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRA"}, "labels": {"0": "background", "1": "vessel"}}))
    result = vol25d("evaluate", "--pred", refs / "labelsTr", "--ref", refs / "labelsTr")
    assert result.returncode == 0, result.stderr
    assert "vessel" in result.stdout and result.stdout.strip().endswith("mean Dice: 1.000")


def test_make_phantoms_writes_the_chosen_layout(tmp_path):
    assert vol25d("-q", "make-phantoms", tmp_path / "s", "--n", 1, "--size", 16, "--layout", "spread").returncode == 0
    assert "layout spread" in (tmp_path / "s" / "dataset.json").read_text()
    assert vol25d("-q", "make-phantoms", tmp_path / "m", "--n", 1, "--size", 16).returncode == 0
    assert "layout mixed" in (tmp_path / "m" / "dataset.json").read_text()  # the command's default
    refused = vol25d("make-phantoms", tmp_path / "x", "--layout", "grid")
    assert refused.returncode == 2 and "invalid choice: 'grid'" in refused.stderr
    assert not (tmp_path / "x").exists()

"""End to end through the command line, in subprocesses, on tiny phantoms."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def vol25d(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "vol25d", "-q", *map(str, args)], capture_output=True, text=True, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"vol25d {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def one_line_error(result, *fragments):
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(phantoms, tiny_config, tmp_path_factory):
    """A run folder with path 1 (2 epochs) and path 2 (1 epoch) trained on the phantoms."""
    out = tmp_path_factory.mktemp("run")
    vol25d("train", "--path", 1, "--data", phantoms, "--out", out, "--config", tiny_config, "--epochs", 2, "--device", "cpu")
    vol25d("train", "--path", 2, "--data", phantoms, "--out", out, "--init", out / "path1.pt", "--epochs", 1, "--device", "cpu")
    return out


def test_train_writes_the_run_folder(run):
    for name in ("path1.pt", "path1_last.pt", "path2.pt", "path2_last.pt", "path1_metrics.csv", "path2_metrics.csv", "config.yaml"):
        assert (run / name).is_file(), name
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    with (run / "path1_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    checkpoint = torch.load(run / "path2.pt", weights_only=True)
    assert checkpoint["format"] == "vol25d-checkpoint"
    assert checkpoint["model_config"]["directions"] == 8
    assert checkpoint["class_names"] == ["vessel"]
    assert checkpoint["preprocess"]["target_spacing_mm"] is not None


def test_path2_leaves_the_unet_as_path1_trained_it(run):
    first = torch.load(run / "path1.pt", weights_only=True)["state_dict"]
    second = torch.load(run / "path2.pt", weights_only=True)["state_dict"]
    unet = [k for k in first if k.startswith("unet.")]
    assert unet and all(torch.equal(first[k], second[k]) for k in unet)
    assert not torch.equal(first["filtration.kernel"], second["filtration.kernel"])


def _oblique_lps_image(source: Path, target: Path) -> nib.Nifti1Image:
    """The phantom's voxels under an oblique, LPS-flipped, anisotropic affine."""
    image = nib.load(source)
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([0.6, 0.6, 0.9])
    affine[:3, 3] = [12.0, -7.0, 30.0]
    oblique = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32), affine)
    nib.save(oblique, target)
    return oblique


@pytest.mark.parametrize("checkpoint", ["path2.pt", "path1.pt"])
def test_predict_keeps_the_input_geometry(run, phantoms, tmp_path, checkpoint):
    source = sorted((phantoms / "imagesTr").iterdir())[0]
    image = _oblique_lps_image(source, tmp_path / "oblique.nii.gz")
    out = tmp_path / "mask.nii.gz"
    vol25d("predict", "-i", tmp_path / "oblique.nii.gz", "-o", out, "-m", run / checkpoint, "--device", "cpu", "--report")
    mask = nib.load(out)
    assert mask.shape == image.shape
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    assert (tmp_path / "mask.png").is_file()


def test_predict_probabilities_and_folder_output(run, phantoms, tmp_path):
    vol25d("predict", "-i", phantoms / "imagesTr", "-o", tmp_path / "pred", "-m", run / "path2.pt", "--probabilities", "--tta")
    outputs = sorted((tmp_path / "pred").iterdir())
    assert [p.name for p in outputs] == [f"phantom_{i:03d}.nii.gz" for i in range(4)]
    probabilities = np.asarray(nib.load(outputs[0]).dataobj)
    assert probabilities.dtype == np.float32
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_evaluate_prints_a_table_and_writes_csv(run, phantoms, tmp_path):
    vol25d("predict", "-i", phantoms / "imagesTr", "-o", tmp_path / "pred", "-m", run / "path2.pt")
    result = vol25d("evaluate", "--pred", tmp_path / "pred", "--ref", phantoms / "labelsTr", "--csv", tmp_path / "scores.csv")
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("mean Dice: ")
    dice = float(last.split(": ")[1])
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["class"] for row in rows} == {"vessel"}
    assert abs(np.mean([float(row["dice"]) for row in rows]) - dice) < 1e-3


def test_path2_without_init_is_one_sentence(phantoms, tmp_path):
    result = vol25d("train", "--path", 2, "--data", phantoms, "--out", tmp_path / "run", check=False)
    one_line_error(result, "--init")
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_is_one_sentence(tmp_path):
    result = vol25d("train", "--path", 1, "--data", tmp_path / "nowhere", "--out", tmp_path / "run", check=False)
    one_line_error(result, "nowhere")
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_not_a_checkpoint_is_one_sentence(phantoms, tmp_path):
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"not a checkpoint at all")
    source = sorted((phantoms / "imagesTr").iterdir())[0]
    result = vol25d("predict", "-i", source, "-o", tmp_path / "out.nii.gz", "-m", fake, check=False)
    one_line_error(result, "model.pt", "not a vol25d checkpoint")
    assert list(tmp_path.iterdir()) == [fake]


def test_an_image_with_another_channel_count_is_one_sentence(run, tmp_path):
    image = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16, 2)).astype(np.float32), np.eye(4))
    nib.save(image, tmp_path / "two_channels.nii.gz")
    result = vol25d("predict", "-i", tmp_path / "two_channels.nii.gz", "-o", tmp_path / "out.nii.gz", "-m", run / "path2.pt", check=False)
    one_line_error(result, "two_channels.nii.gz")
    assert not (tmp_path / "out.nii.gz").exists()


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(phantoms, tiny_config, tmp_path):
    args = ["train", "--path", 1, "--data", phantoms, "--config", tiny_config, "--epochs", 4, "--device", "cpu", "--seed", 3]
    vol25d(*args, "--out", tmp_path / "straight")
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "vol25d", "-q", *map(str, args), "--out", str(killed)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while not (killed / "path1_last.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    vol25d(*args, "--out", killed, "--resume")
    for name in ("path1.pt", "path1_last.pt"):
        first, second = _weights(tmp_path / "straight" / name), _weights(killed / name)
        assert all(torch.equal(first[k], second[k]) for k in first), name
    straight = (tmp_path / "straight" / "path1_metrics.csv").read_text().splitlines()
    resumed = (killed / "path1_metrics.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in straight] == [row.split(",")[:3] for row in resumed]

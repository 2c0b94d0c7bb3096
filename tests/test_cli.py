"""End to end through the command line, in subprocesses, on tiny phantoms."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def vol25d(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "vol25d", "-q", *map(str, args)], capture_output=True, encoding="utf-8", env=ENV)
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


def test_train_writes_the_run_folder(run):
    for name in ("path1.pt", "path1_last.pt", "path2.pt", "path2_last.pt", "path1_metrics.csv", "path2_metrics.csv", "config.yaml",
                 "progress.png"):
        assert (run / name).is_file(), name
    assert (run / "progress.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert any((run / "tb").rglob("events.out.tfevents.*"))
    with (run / "path1_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    checkpoint = torch.load(run / "path2.pt", weights_only=True)
    assert checkpoint["format"] == "vol25d-checkpoint"
    assert checkpoint["model_config"]["directions"] == 8
    assert checkpoint["class_names"] == ["vessel"]
    assert checkpoint["preprocess"]["target_spacing_mm"] is not None


def test_a_run_re_runs_from_its_own_config_yaml(run, phantoms, tmp_path):
    """vol25d train --config RUN/config.yaml: the same settings (train, model, augmentation, the planned
    preprocessing), so the same weights; path 2 takes its own path's settings."""
    again = tmp_path / "again"
    vol25d("train", "--path", 1, "--data", phantoms, "--out", again, "--config", run / "config.yaml")
    vol25d("train", "--path", 2, "--data", phantoms, "--out", again, "--config", run / "config.yaml",
           "--init", again / "path1.pt")
    before, after = (yaml.safe_load((folder / "config.yaml").read_text()) for folder in (run, again))
    for path in ("path1", "path2"):
        for section in ("train", "model", "preprocess", "classes", "split"):
            assert before[path][section] == after[path][section], (path, section)
    first, second = (torch.load(folder / "path2.pt", weights_only=True)["state_dict"] for folder in (run, again))
    assert all(torch.equal(first[k], second[k]) for k in first)
    (tmp_path / "only1.yaml").write_text(yaml.safe_dump({"path1": before["path1"]}))
    result = vol25d("train", "--path", 2, "--data", phantoms, "--out", tmp_path / "x", "--init", again / "path1.pt",
                    "--config", tmp_path / "only1.yaml", check=False)
    one_line_error(result, "without a path 2 run")
    assert not (tmp_path / "x").exists()


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


def test_predict_view_chunk_bounds_memory_not_the_result(run, phantoms, tmp_path):
    """--view-chunk is a runtime memory control: any chunk gives the same probabilities."""
    source = sorted((phantoms / "imagesTr").iterdir())[0]
    for chunk in (1, 16):
        vol25d("predict", "-i", source, "-o", tmp_path / f"p{chunk}.nii.gz", "-m", run / "path2.pt", "--probabilities",
               "--view-chunk", chunk)
    one, all_ = (np.asarray(nib.load(tmp_path / f"p{c}.nii.gz").dataobj) for c in (1, 16))
    np.testing.assert_allclose(one, all_, atol=1e-5)


def test_evaluate_prints_a_table_and_writes_csv_and_json(run, phantoms, tmp_path):
    vol25d("predict", "-i", phantoms / "imagesTr", "-o", tmp_path / "pred", "-m", run / "path2.pt")
    result = vol25d("evaluate", "--pred", tmp_path / "pred", "--ref", phantoms / "labelsTr", "--csv", tmp_path / "scores.csv",
                    "--json", tmp_path / "scores.json")
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("mean Dice: ")
    dice = float(last.split(": ")[1])
    with (tmp_path / "scores.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["class"] for row in rows} == {"vessel"}
    assert abs(np.mean([float(row["dice"]) for row in rows]) - dice) < 1e-3
    summary = json.loads((tmp_path / "scores.json").read_text())
    assert summary["sd_ddof"] == 1 and sorted(summary["cases"]) == [row["case"] for row in rows]
    per_case = [summary["cases"][row["case"]]["vessel"]["dice"] for row in rows]
    assert per_case == pytest.approx([float(row["dice"]) for row in rows], abs=1e-6)
    vessel = summary["classes"]["vessel"]["dice"]
    assert vessel["n"] == 4 and vessel["mean"] == pytest.approx(np.mean(per_case))
    assert vessel["sd"] == pytest.approx(np.std(per_case, ddof=1)) and abs(summary["mean_dice"] - dice) < 1e-3


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


def _in_process(args, capsys) -> str:
    """The CLI in this process (no interpreter start-up): its stdout; it must succeed."""
    from vol25d.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_save_probabilities_beside_the_labels_and_continue(run, phantoms, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    source = _oblique_lps_image(sorted((phantoms / "imagesTr").iterdir())[0], tmp_path / "in" / "scan.nii")
    shutil.copy(sorted((phantoms / "imagesTr").iterdir())[1], tmp_path / "in" / "other.nii.gz")
    out = tmp_path / "pred"
    _in_process(["-q", "predict", "-i", tmp_path / "in", "-o", out, "-m", run / "path2.pt", "--save-probabilities"], capsys)
    assert sorted(p.name for p in out.iterdir()) == ["other.nii.gz", "other_probabilities.nii.gz", "scan.nii",
                                                     "scan_probabilities.nii.gz"]
    labels, probabilities = nib.load(out / "scan.nii"), nib.load(out / "scan_probabilities.nii.gz")
    assert probabilities.get_data_dtype() == np.float32 and probabilities.shape == source.shape
    np.testing.assert_allclose(probabilities.affine, source.affine, atol=1e-5)
    values = np.asarray(probabilities.dataobj)
    assert 0 <= values.min() and values.max() <= 1
    np.testing.assert_array_equal(np.asarray(labels.dataobj), (values >= 0.5).astype(np.uint8))

    # --continue: complete cases are left alone, a case missing one of its files is predicted again.
    kept = (out / "other.nii.gz").stat().st_mtime_ns
    (out / "scan_probabilities.nii.gz").unlink()
    printed = _in_process(["-q", "predict", "-i", tmp_path / "in", "-o", out, "-m", run / "path2.pt",
                           "--save-probabilities", "--continue"], capsys)
    assert printed.startswith("wrote 2 file(s)")
    assert (out / "other.nii.gz").stat().st_mtime_ns == kept and (out / "scan_probabilities.nii.gz").is_file()
    (tmp_path / "ref").mkdir()
    for name in ("scan.nii", "other.nii.gz"):
        shutil.copy(out / name, tmp_path / "ref" / name)
    scores = _in_process(["evaluate", "--pred", out, "--ref", tmp_path / "ref"], capsys)  # beside-files ignored
    assert scores.strip().endswith("mean Dice: 1.000") and "probabilities" not in scores


def test_a_multi_label_model_also_writes_a_3d_label_map(run, phantoms, tmp_path, capsys):
    import dataclasses

    from vol25d.checkpoint import Checkpoint
    from vol25d.model import ModelConfig, Random25DUNet

    trained = Checkpoint.load(run / "path2.pt")
    model = Random25DUNet.from_config(ModelConfig.from_dict({**trained.model_config, "out_channels": 2}))
    checkpoint = dataclasses.replace(Checkpoint.of_model(model, **{
        f.name: getattr(trained, f.name) for f in dataclasses.fields(Checkpoint)
        if f.name not in ("model_config", "state_dict", "unet_frozen")}), class_names=["artery", "vein"],
        multi_label=True).save(tmp_path / "multi.pt")
    source = sorted((phantoms / "imagesTr").iterdir())[0]
    _in_process(["-q", "predict", "-i", source, "-o", tmp_path / "seg.nii.gz", "-m", checkpoint, "--save-probabilities"], capsys)
    masks = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    probabilities = np.asarray(nib.load(tmp_path / "seg_probabilities.nii.gz").dataobj)
    label_map = nib.load(tmp_path / "seg_labelmap.nii.gz")
    assert masks.shape[-1] == 2 and probabilities.shape == masks.shape
    assert label_map.shape == masks.shape[:3] and label_map.get_data_dtype() == np.uint8
    values = np.asarray(label_map.dataobj)
    np.testing.assert_array_equal(values > 0, masks.any(-1))
    both = masks.all(-1)
    np.testing.assert_array_equal(values[both], 1 + probabilities[both].argmax(-1))
    np.testing.assert_allclose(label_map.affine, nib.load(source).affine, atol=1e-6)


def test_nhdr_and_a_dicom_folder_without_endings_are_read(run, tmp_path, capsys):
    import SimpleITK as sitk

    array = np.random.default_rng(1).random((20, 18, 16)).astype(np.float32) * 100  # (X, Y, Z)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    image.SetSpacing((0.6, 0.6, 1.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nhdr"))
    _in_process(["-q", "predict", "-i", tmp_path / "scan.nhdr", "-o", tmp_path / "mask.nii.gz", "-m", run / "path2.pt"], capsys)
    assert nib.load(tmp_path / "mask.nii.gz").shape == (20, 18, 16)

    series = tmp_path / "DICOM"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slices = array.astype(np.int16)
    for k in range(slices.shape[2]):
        slice_ = sitk.GetImageFromArray(slices[:, :, k].T.copy())
        for key, value in {"0020|000e": "1.2.826.0.1.3680043.2.1125.1", "0020|000d": "1.2.826.0.1.3680043.2.1125.2",
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": f"0\\0\\{1.0 * k}", "0020|0013": str(k + 1),
                           "0008|0060": "MR", "0028|0030": "0.6\\0.6", "0018|0050": "1.0"}.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(series / f"IM{k:04d}.dcm"))
        writer.Execute(slice_)
        (series / f"IM{k:04d}.dcm").rename(series / f"IM{k:04d}")  # as PACS exports name them
    _in_process(["-q", "predict", "-i", series, "-o", tmp_path / "dicom_mask.nii.gz", "-m", run / "path2.pt"], capsys)
    assert nib.load(tmp_path / "dicom_mask.nii.gz").shape == (20, 18, 16)


def test_info_describes_a_checkpoint(run, capsys):
    table = _in_process(["info", run / "path2.pt"], capsys)
    assert re.search(r"^classes\s+vessel$", table, re.M)
    assert re.search(r"^directions m\s+8$", table, re.M) and re.search(r"^trained in\s+path 2 \(U frozen\)$", table, re.M)
    assert re.search(r"^training data\s+.+: 3 training / 1 validation cases$", table, re.M)
    assert re.search(r"^head T\s+.*reads the image", table, re.M)
    described = json.loads(_in_process(["info", run / "path1.pt", "--json"], capsys))
    assert described["classes"] == ["vessel"] and described["channels"] == ["MRA"]
    assert described["model"]["directions_m"] == 8 and described["model"]["views_p"] == 2
    assert described["path"] == 1 and described["training"]["train_cases"] == 3
    assert described["model"]["head"]["image"] is True
    assert len(described["preprocess"]["target_spacing_mm"]) == 3


def test_path1_init_fine_tunes_a_trained_model(run, phantoms, tmp_path):
    vol25d("train", "--path", 1, "--data", phantoms, "--out", tmp_path / "tuned", "--init", run / "path2.pt",
           "--epochs", 1, "--device", "cpu", "--views", 4)
    start, tuned = torch.load(run / "path2.pt", weights_only=True), torch.load(tmp_path / "tuned" / "path1.pt", weights_only=True)
    assert tuned["preprocess"] == start["preprocess"]
    assert {**start["model_config"], "views": 4} == tuned["model_config"]
    assert tuned["train_config"]["lr"] == 3e-4 and not tuned["unet_frozen"]
    unet = [k for k in start["state_dict"] if k.startswith("unet.")]
    assert any(not torch.equal(start["state_dict"][k], tuned["state_dict"][k]) for k in unet)  # U trained again
    config = yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text())
    assert config["path1"]["init"] == str(run / "path2.pt")


def test_the_example_config_is_read_as_is_and_lists_every_setting():
    import dataclasses

    from vol25d.settings import config_sections as _config_sections, read_config_file as _config_file
    from vol25d.data.augment import AugmentConfig
    from vol25d.data.preprocess import PreprocessConfig
    from vol25d.model import ModelConfig
    from vol25d.train import TrainConfig

    example = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "example.yaml"
    sections = _config_file(example)
    commented = set(re.findall(r"^# (\w+): ", example.read_text(encoding="utf-8"), re.M))  # left to vol25d
    assert {name: set(values) | (commented & set(_config_sections()[name])) for name, values in sections.items()} == \
        {name: set(known) for name, known in _config_sections().items()}  # every setting, no other
    assert commented == {"max_voxels"}
    augment = AugmentConfig(**sections["augment"])
    train = TrainConfig(**sections["train"], augment=augment)
    model = ModelConfig.from_dict(sections["model"])
    preprocess = PreprocessConfig(**sections["preprocess"])
    # It states the defaults: the file changes nothing until a user edits it.
    assert (train, model, augment) == (TrainConfig(), ModelConfig(), AugmentConfig())
    assert dataclasses.replace(preprocess) == PreprocessConfig()

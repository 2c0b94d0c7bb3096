"""Labels from probabilities and small-component removal (the CLI tests cover files in and out)."""

import subprocess
import sys

import numpy as np

from pathlib import Path

from vol25d.infer import label_map, output_files, probabilities_to_labels, remove_small_components


def test_small_components_are_dropped_and_large_ones_kept():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[7, 7, 7] = True  # 1 voxel
    mask[8, 8, 8] = True  # touches the one above diagonally: 26-connected, 2 voxels
    kept = remove_small_components(mask, 3)
    assert kept[1:4, 1:4, 1:4].all()
    assert not kept[7, 7, 7] and not kept[8, 8, 8]
    assert remove_small_components(mask, 2)[8, 8, 8]


def test_exclusive_classes_become_one_integer_map():
    probabilities = np.zeros((2, 1, 1, 3), dtype=np.float32)
    probabilities[0, 0, 0] = [0.2, 0.7, 0.6]
    probabilities[1, 0, 0] = [0.1, 0.3, 0.2]
    labels = probabilities_to_labels(probabilities, 0.5, multi_label=False)
    assert labels.shape == (2, 1, 1) and labels.dtype == np.uint8
    assert labels[0, 0, 0] == 2 and labels[1, 0, 0] == 0


def test_overlapping_classes_stay_one_channel_each():
    probabilities = np.zeros((1, 1, 1, 3), dtype=np.float32)
    probabilities[0, 0, 0] = [0.9, 0.6, 0.1]
    labels = probabilities_to_labels(probabilities, 0.5, multi_label=True)
    assert labels.shape == (1, 1, 1, 3)
    assert labels[0, 0, 0].tolist() == [1, 1, 0]


def test_the_label_map_of_overlapping_classes_takes_the_most_probable_labelled_one():
    probabilities = np.zeros((4, 1, 1, 3), dtype=np.float32)
    probabilities[0, 0, 0] = [0.9, 0.6, 0.1]  # classes 1 and 2 overlap: 1 is more probable
    probabilities[1, 0, 0] = [0.55, 0.8, 0.95]  # all three: 3
    probabilities[2, 0, 0] = [0.1, 0.2, 0.3]  # none
    probabilities[3, 0, 0] = [0.7, 0.7, 0.1]  # a tie: the first class
    masks = probabilities_to_labels(probabilities, 0.5, multi_label=True)
    masks[1, 0, 0, 2] = 0  # as if min_size had dropped class 3 there: the next most probable labelled class wins
    labels = label_map(probabilities, masks)
    assert labels.dtype == np.uint8 and labels.shape == (4, 1, 1)
    assert labels[:, 0, 0].tolist() == [1, 2, 0, 1]


def test_output_files_sit_beside_the_labels():
    files = output_files(Path("out/case_7.nii"), multi_label=True, save_probabilities=True, report=True)
    assert files == {"labels": Path("out/case_7.nii"), "probabilities": Path("out/case_7_probabilities.nii.gz"),
                     "label_map": Path("out/case_7_labelmap.nii"), "report": Path("out/case_7.png")}
    assert output_files(Path("a.mha"), multi_label=False, save_probabilities=False, report=False) == {"labels": Path("a.mha")}


def test_prediction_does_not_import_the_training_stack():
    code = "import sys, vol25d.infer; print(sorted(m for m in ('vol25d.train', 'kornia') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_report_turns_about_the_checkpoints_rotation_axis(tmp_path, monkeypatch):
    """A model trained about AP gets its report's MIPs about AP, not the default SI."""
    import vol25d.report
    from conftest import TINY_MODEL
    from vol25d.checkpoint import Checkpoint
    from vol25d.data.preprocess import PreprocessConfig
    from vol25d.infer import predict
    from vol25d.io import Volume, write_volume
    from vol25d.model import ModelConfig, Random25DUNet

    model = Random25DUNet.from_config(ModelConfig(**TINY_MODEL))
    Checkpoint.of_model(model, class_names=["vessel"], channel_names=["MRA"],
                        preprocess=PreprocessConfig(rotation_axis="AP", crop_foreground=False).to_dict()
                        ).save(tmp_path / "model.pt")
    write_volume(Volume(np.random.default_rng(0).random((12, 14, 10)).astype(np.float32), np.eye(4)),
                 tmp_path / "scan.nii.gz")
    axes, real = [], vol25d.report.to_canonical
    monkeypatch.setattr(vol25d.report, "to_canonical", lambda a, f, axis="SI": axes.append(axis) or real(a, f, axis))
    predict(tmp_path / "scan.nii.gz", tmp_path / "out.nii.gz", tmp_path / "model.pt", report=True, device="cpu")
    assert axes == ["AP", "AP"] and (tmp_path / "out.png").stat().st_size > 0

"""Bad input through the command line, as a table: every row is one command a user might type with a bad file,
setting or argument. Each must end with exit code 1 (2 for a usage error), exactly one line on stderr naming
the problem, no traceback, and nothing written."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from vol25d.cli import main

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


class _Exploit:
    """Unpickling this would run a shell command that creates a file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _image(path: Path, array: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 1.0, 1.0]) if affine is None else affine), path)
    return path


def _phantom_image(phantoms: Path) -> Path:
    return sorted((phantoms / "imagesTr").iterdir())[0]


def _with_voxel(phantoms: Path, tmp: Path, value: float) -> Path:
    image = nib.load(_phantom_image(phantoms))
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[3, 4, 5] = value
    return _image(tmp / "scan.nii.gz", data, image.affine)


def _yaml(tmp: Path, text: str) -> Path:
    (tmp / "config.yaml").write_text(text)
    return tmp / "config.yaml"


def _train(phantoms, tmp, *args):
    return ["train", "--path", 1, "--data", phantoms, "--out", tmp / "run", "--device", "cpu", *args]


def _predict(source, tmp, checkpoint, *args):
    return ["predict", "-i", source, "-o", tmp / "out.nii.gz", "-m", checkpoint, "--device", "cpu", *args]


def _checkpoint_case(make):
    def setup(ctx, tmp):
        path = tmp / "model.pt"
        make(path, ctx, tmp)
        return _predict(_phantom_image(ctx["phantoms"]), tmp, path)
    return setup


def _random_bytes(path, ctx, tmp):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated(path, ctx, tmp):
    data = (ctx["run"] / "path2.pt").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _exploit(path, ctx, tmp):
    path.write_bytes(pickle.dumps({"format": "vol25d-checkpoint", "x": _Exploit(tmp / "PWNED")}))


def _torch_exploit(path, ctx, tmp):
    torch.save({"format": "vol25d-checkpoint", "x": _Exploit(tmp / "PWNED")}, path)


def _no_format(path, ctx, tmp):
    values = torch.load(ctx["run"] / "path2.pt", weights_only=True)
    del values["format"]
    torch.save(values, path)


def _damaged(path, ctx, tmp):
    values = torch.load(ctx["run"] / "path2.pt", weights_only=True)
    values["state_dict"] = [1, 2, 3]
    torch.save(values, path)


def _missing_predictions(ctx, tmp):
    pred = tmp / "pred"
    pred.mkdir()
    labels = sorted((ctx["phantoms"] / "labelsTr").iterdir())
    shutil.copy(labels[0], pred / labels[0].name)
    return ["evaluate", "--pred", pred, "--ref", ctx["phantoms"] / "labelsTr", "--csv", tmp / "scores.csv"]


def _shifted_prediction(ctx, tmp):
    pred = tmp / "pred"
    pred.mkdir()
    for label in sorted((ctx["phantoms"] / "labelsTr").iterdir()):
        image = nib.load(label)
        affine = image.affine.copy()
        affine[:3, 3] += [0.0, 0.0, 2.0]
        _image(pred / label.name, np.asarray(image.dataobj), affine)
    return ["evaluate", "--pred", pred, "--ref", ctx["phantoms"] / "labelsTr", "--csv", tmp / "scores.csv"]


def _four_d_prediction(ctx, tmp):
    pred = tmp / "pred"
    pred.mkdir()
    for label in sorted((ctx["phantoms"] / "labelsTr").iterdir()):
        image = nib.load(label)
        data = np.asarray(image.dataobj)
        _image(pred / label.name, np.stack([data, data], axis=-1), image.affine)
    return ["evaluate", "--pred", pred, "--ref", ctx["phantoms"] / "labelsTr"]


def _other_classes(ctx, tmp):
    data = tmp / "data"
    shutil.copytree(ctx["phantoms"], data)
    meta = json.loads((data / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "artery": 1}
    (data / "dataset.json").write_text(json.dumps(meta))
    return ["train", "--path", 1, "--data", data, "--out", tmp / "run", "--init", ctx["run"] / "path2.pt", "--device", "cpu"]


# id, setup(ctx, tmp) → arguments, exit code, fragments the one stderr line must hold
CASES = [
    ("nan-voxel", lambda c, t: _predict(_with_voxel(c["phantoms"], t, np.nan), t, c["run"] / "path2.pt"), 1,
     ["scan.nii.gz", "NaN/Inf"]),
    ("inf-voxel", lambda c, t: _predict(_with_voxel(c["phantoms"], t, np.inf), t, c["run"] / "path2.pt"), 1,
     ["scan.nii.gz", "NaN/Inf"]),
    ("2-d-image", lambda c, t: _predict(_image(t / "flat.nii.gz", np.ones((16, 16), np.float32)), t, c["run"] / "path2.pt"),
     1, ["flat.nii.gz", "2-D"]),
    ("4-d-image", lambda c, t: _predict(_image(t / "four.nii.gz", np.ones((8, 8, 8, 3), np.float32)), t, c["run"] / "path2.pt"),
     1, ["four.nii.gz", "3 volumes"]),
    ("tiny-image", lambda c, t: _predict(_image(t / "tiny.nii.gz", np.ones((2, 2, 2), np.float32)), t, c["run"] / "path2.pt"),
     1, ["tiny.nii.gz", "fewer than 4 voxels"]),
    ("text-as-image", lambda c, t: (t / "notes.txt").write_text("hello") and _predict(t / "notes.txt", t, c["run"] / "path2.pt"),
     1, ["notes.txt", ".nii.gz"]),
    ("garbage-nifti", lambda c, t: (t / "scan.nii.gz").write_bytes(b"\x00" * 500) and _predict(t / "scan.nii.gz", t, c["run"] / "path2.pt"),
     1, ["scan.nii.gz", "not a readable NIfTI"]),
    ("truncated-nifti", lambda c, t: (t / "scan.nii.gz").write_bytes(_phantom_image(c["phantoms"]).read_bytes()[:2000])
     and _predict(t / "scan.nii.gz", t, c["run"] / "path2.pt"), 1, ["scan.nii.gz", "truncated"]),
    ("empty-folder", lambda c, t: (t / "in").mkdir() or ["predict", "-i", t / "in", "-o", t / "out", "-m", c["run"] / "path2.pt"],
     1, ["holds no image files"]),
    ("output-nhdr", lambda c, t: ["predict", "-i", _phantom_image(c["phantoms"]), "-o", t / "out.nhdr", "-m", c["run"] / "path2.pt"],
     1, ["out.nhdr", ".nii.gz"]),
    ("random-checkpoint", _checkpoint_case(_random_bytes), 1, ["model.pt", "not a vol25d checkpoint"]),
    ("truncated-checkpoint", _checkpoint_case(_truncated), 1, ["model.pt", "truncated"]),
    ("pickle-exploit", _checkpoint_case(_exploit), 1, ["model.pt", "ran nothing"]),
    ("torch-exploit", _checkpoint_case(_torch_exploit), 1, ["model.pt", "ran nothing"]),
    ("no-format-key", _checkpoint_case(_no_format), 1, ["model.pt", "not a vol25d checkpoint"]),
    ("damaged-checkpoint", _checkpoint_case(_damaged), 1, ["model.pt", "damaged"]),
    ("checkpoint-folder", lambda c, t: _predict(_phantom_image(c["phantoms"]), t, c["run"]), 1, ["is a folder"]),
    ("info-random", lambda c, t: (t / "m.pt").write_bytes(b"PK\x03\x04" + b"x" * 100) and ["info", t / "m.pt"], 1,
     ["m.pt", "not a vol25d checkpoint"]),
    ("predict-device-gpu", lambda c, t: _predict(_phantom_image(c["phantoms"]), t, c["run"] / "path2.pt", "--device", "gpu"),
     1, ["'gpu'", "--device cuda"]),
    ("train-device-gpu", lambda c, t: _train(c["phantoms"], t, "--device", "gpu"), 1, ["'gpu'"]),
    ("demo-device-gpu", lambda c, t: ["demo", "--out", t / "demo", "--device", "gpu"], 1, ["'gpu'"]),
    ("views-above-directions", lambda c, t: _train(c["phantoms"], t, "--directions", 8, "--views", 100), 1,
     ["views (p = 100)", "directions (m = 8)"]),
    ("yaml-scalar", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "3\n")), 1, ["config.yaml", "mapping"]),
    ("yaml-list", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "- train\n- model\n")), 1, ["config.yaml", "list"]),
    ("yaml-invalid", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "train: [1,\n")), 1, ["config.yaml", "not valid YAML"]),
    ("yaml-unknown-top", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "training: {}\n")), 1, ["training"]),
    ("yaml-unknown-model-key", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "model:\n  bogus: 1\n")), 1,
     ["bogus", "'model'"]),
    ("yaml-section-scalar", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "model: 3\n")), 1, ["'model'", "mapping"]),
    ("yaml-wrong-type", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "train:\n  epochs: ten\n")), 1,
     ["train.epochs", "whole number"]),
    ("yaml-wrong-type-unset-default", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "train:\n  lr: fast\n")), 1,
     ["train.lr", "a number", "'fast'"]),
    ("yaml-bad-value", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "preprocess:\n  normalization: foo\n")), 1,
     ["normalization", "'foo'"]),
    ("yaml-missing", lambda c, t: _train(c["phantoms"], t, "--config", t / "nowhere.yaml"), 1, ["nowhere.yaml"]),
    ("predict-view-chunk-zero", lambda c, t: _predict(_phantom_image(c["phantoms"]), t, c["run"] / "path2.pt",
                                                      "--view-chunk", 0), 1, ["view_chunk", "≥ 1"]),
    ("train-path2-copies-negative", lambda c, t: _train(c["phantoms"], t, "--path2-copies", -1), 1,
     ["path2_copies must be a whole number ≥ 0", "-1"]),
    ("train-checkpoint-views-negative", lambda c, t: _train(c["phantoms"], t, "--checkpoint-views", -1), 1,
     ["checkpoint_views", "≥ 0"]),
    ("yaml-memory-control-in-model", lambda c, t: _train(c["phantoms"], t, "--config", _yaml(t, "model:\n  view_chunk: 8\n")),
     1, ["view_chunk", "train section"]),
    ("threads-zero", lambda c, t: _predict(_phantom_image(c["phantoms"]), t, c["run"] / "path2.pt", "--threads", 0), 1,
     ["--threads"]),
    ("init-other-classes", _other_classes, 1, ["artery", "vessel"]),
    ("init-and-resume", lambda c, t: _train(c["phantoms"], t, "--init", c["run"] / "path2.pt", "--resume"), 1,
     ["--resume", "--init"]),
    ("evaluate-missing", _missing_predictions, 1, ["no prediction for 3 of the 4", "phantom_001", "--allow-missing"]),
    ("evaluate-affine", _shifted_prediction, 1, ["affine differs", "origin by 2 mm"]),
    ("output-under-a-file", lambda c, t: (t / "afile").write_text("x") and
     ["predict", "-i", c["phantoms"] / "imagesTr", "-o", t / "afile" / "pred", "-m", c["run"] / "path2.pt"], 1,
     ["afile/pred", "Not a directory"]),
    ("data-is-a-file", lambda c, t: _train(c["phantoms"] / "dataset.json", t), 1, ["dataset.json", "not a folder"]),
    ("evaluate-4d-against-3d", _four_d_prediction, 1, ["(24, 24, 24, 2)", "one channel per class"]),
    ("usage-bad-choice", lambda c, t: ["train", "--path", 3, "--data", t, "--out", t / "run"], 2, ["--path", "--help"]),
    ("usage-missing-argument", lambda c, t: ["predict", "-i", t], 2, ["required", "--help"]),
]


@pytest.fixture(scope="module")
def ctx(phantoms, run):
    return {"phantoms": phantoms, "run": run}


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def _main(args, capsys) -> tuple[int, str]:
    """The CLI in this process (much faster than a subprocess per row): exit code and stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("setup, code, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(ctx, tmp_path, capsys, setup, code, fragments):
    args = setup(ctx, tmp_path)
    before, run_before = _files(tmp_path), _files(ctx["run"])
    returned, stderr = _main(args, capsys)  # an exception other than our one-line errors fails the test here
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returned == code, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert _files(tmp_path) == before, sorted(_files(tmp_path) - before)
    assert _files(ctx["run"]) == run_before
    assert not (tmp_path / "PWNED").exists()


def test_a_bad_input_in_a_process_has_no_traceback(ctx, tmp_path):
    args = _predict(_with_voxel(ctx["phantoms"], tmp_path, np.nan), tmp_path, ctx["run"] / "path2.pt")
    result = subprocess.run([sys.executable, "-m", "vol25d", *map(str, args)], capture_output=True, encoding="utf-8", env=ENV)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "NaN/Inf" in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_quiet_and_verbose_after_the_subcommand(ctx, tmp_path, capsys):
    source = _phantom_image(ctx["phantoms"])
    common = ["-m", ctx["run"] / "path2.pt", "--device", "cpu"]
    code, stderr = _main(["predict", "-i", source, "-o", tmp_path / "q.nii.gz", *common, "-q"], capsys)
    assert code == 0 and stderr == "" and (tmp_path / "q.nii.gz").is_file()
    code, stderr = _main(["predict", "-i", source, "-o", tmp_path / "v.nii.gz", *common, "-v"], capsys)
    assert code == 0 and "torch CPU threads" in stderr  # a debug line
    code, stderr = _main(["predict", "-i", source, "-o", tmp_path / "i.nii.gz", *common], capsys)
    assert code == 0 and "torch CPU threads" not in stderr and "→" in stderr  # info, not debug


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "info", "demo", "make-phantoms", "check-data",
                                     "convert-gitract"])
def test_every_subcommand_has_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 25, description
    assert f"example:\n  vol25d {command}" in text

"""What a GPU node with few packages needs: torch, monai, nibabel, kornia (and what such a node already has),
not SimpleITK, which only non-NIfTI files and N4 need."""

import subprocess
import sys

import yaml

from conftest import TINY_MODEL


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=300)


def test_importing_the_gpu_path_does_not_import_simpleitk():
    code = ("import sys, vol25d.train, vol25d.infer, vol25d.model, vol25d.ops, vol25d.cli, vol25d.evaluate; "
            "print('SimpleITK' in sys.modules)")
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_train_and_predict_nifti_without_simpleitk(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {"amp": False, "steps_per_case": 1}}))
    data, run, pred = tmp_path / "data", tmp_path / "run", tmp_path / "pred"
    code = f"""
import sys
sys.modules["SimpleITK"] = None  # importing it now fails, as on a node where it is not installed
from vol25d.cli import main
assert main(["-q", "make-phantoms", r"{data}", "--n", "3", "--size", "16"]) == 0
assert main(["-q", "train", "--path", "1", "--data", r"{data}", "--out", r"{run}", "--config", r"{config}",
             "--epochs", "1", "--device", "cpu"]) == 0
assert main(["-q", "predict", "-i", r"{data}/imagesTr", "-o", r"{pred}", "-m", r"{run}/path1.pt", "--device", "cpu"]) == 0
"""
    done = _run(code)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(list(pred.glob("*.nii.gz"))) == 3


def test_a_non_nifti_file_without_simpleitk_is_one_clear_sentence(tmp_path):
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    code = f"""
import sys
sys.modules["SimpleITK"] = None
from vol25d.errors import InputError
from vol25d.io import read_volume
try:
    read_volume(r"{tmp_path}/scan.mha")
except InputError as error:
    print(error)
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert "scan.mha: reading" in done.stdout and "needs SimpleITK" in done.stdout


def test_the_test_extra_asks_for_triton_only_where_it_has_wheels():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [Requirement(line) for line in pyproject["project"]["optional-dependencies"]["test"]]
    triton = next(r for r in requirements if r.name == "triton")
    platforms = {("Linux", "x86_64"): True, ("Linux", "aarch64"): True, ("Darwin", "arm64"): False,
                 ("Darwin", "x86_64"): False, ("Windows", "AMD64"): False}
    for (system, machine), wanted in platforms.items():
        assert triton.marker.evaluate({"platform_system": system, "platform_machine": machine}) is wanted, (system, machine)
    assert all(r.marker is None for r in requirements if r.name != "triton")

"""experiments/kaggle/build_wheels.py: what it builds from pip's report, and an offline build end to end."""

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "kaggle" / "build_wheels.py"
build_wheels = load_script(SCRIPT, "build_wheels")


def report(*distributions: tuple[str, str]) -> dict:
    return {"version": "1", "install": [{"metadata": {"name": n, "version": v}} for n, v in distributions]}


def test_only_what_the_environment_lacks_less_the_project():
    wanted = report(("vol25d", "0.1.0"), ("monai", "1.4.0"), ("SimpleITK", "2.4.1"), ("kornia_rs", "0.1.8"))
    assert build_wheels.wheels_to_build(wanted) == ["kornia-rs==0.1.8", "monai==1.4.0", "simpleitk==2.4.1"]
    assert build_wheels.wheels_to_build(report(("vol25d", "0.1.0"))) == []


@pytest.mark.parametrize("name", ["torch", "nvidia-cudnn-cu12", "triton", "torchvision"])
def test_the_pytorch_stack_is_never_built(name):
    with pytest.raises(SystemExit, match=f"pip would install {name}==9.9.*torch and CUDA wheels are not part"):
        build_wheels.wheels_to_build(report(("vol25d", "0.1.0"), ("monai", "1.4.0"), (name, "9.9")))


def _setuptools_builds_wheels() -> bool:
    try:
        from importlib.metadata import version

        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except Exception:  # not installed, or an unusual version string
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None  # bdist_wheel built in


@pytest.mark.skipif(not _setuptools_builds_wheels(), reason="needs setuptools >= 70.1 (the [test] extra) to build offline")
def test_offline_build_writes_vol25d_and_nothing_this_environment_has(tmp_path):
    # This environment holds every dependency: only vol25d's own wheel is built, and the offline install check
    # of that wheel (its dependencies resolved against this environment) passes.
    out = tmp_path / "wheels"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--no-index", "--username", "someone"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "lacks 0 distribution(s)" in result.stderr
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert len(wheels) == 1 and wheels[0].startswith("vol25d-") and wheels[0].endswith("-py3-none-any.whl")
    with zipfile.ZipFile(out / wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert {"vol25d/data/gitract/__init__.py", "vol25d/data/gitract/score.py", "vol25d/infer.py"} <= names and not any("__pycache__" in n for n in names)
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "someone/vol25d-wheels"
    assert not (SCRIPT.parents[2] / "build").exists()  # built from a copy: no build/ left in the source tree

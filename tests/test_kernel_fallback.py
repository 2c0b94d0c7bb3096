"""``vol25d train`` and ``predict`` when the Triton kernels fail: they finish on the reference kernels with one
warning, and the run's config.yaml, the checkpoint and ``vol25d info`` say which kernels ran. On the CPU, with
``auto`` made to treat CPU tensors as CUDA ones and a fake Triton module (tests/ops/test_backend.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from vol25d.checkpoint import Checkpoint
from vol25d.cli import build_parser, main
from vol25d.ops import backend, reference

from conftest import fake_triton, raise_no_kernel_image

OLD = Path(__file__).resolve().parent / "fixtures" / "vol25d-0.1.0"
WARNING = "the Triton kernels failed on cpu"


def _cli(args, capsys) -> tuple[str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, captured.err


def test_train_and_predict_finish_on_the_reference_kernels_with_one_warning(cuda_like, phantoms, tiny_config,
                                                                          tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "auto")  # (the CLI sets it; monkeypatch puts it back)

    def small_only(volume, angles, detector):  # passes the 9 × 7 self-check, fails on the 24³ phantoms
        if volume.shape[-1] > 9:
            raise RuntimeError("triton.runtime.errors.OutOfResources: out of resource: shared memory")
        return reference.project(volume, angles, detector)

    cuda_like(fake_triton(project=small_only))
    run = tmp_path / "run"
    _, err = _cli(["-q", "train", "--path", 1, "--data", phantoms, "--out", run, "--device", "cpu", "--config",
                   tiny_config, "--epochs", 1, "--ops-backend", "auto"], capsys)
    assert err.count(WARNING) == 1, err
    recorded = yaml.safe_load((run / "config.yaml").read_text())["path1"]["ops_backend"]
    assert recorded.startswith("reference (fallback: project (float32): RuntimeError: triton.runtime.errors.OutOf")
    assert Checkpoint.load(run / "path1.pt").ops_backend == recorded
    table, _ = _cli(["info", run / "path1.pt"], capsys)
    assert re.search(r"^projection kernels\s+reference \(fallback: project", table, re.M)
    assert re.search(r"^projection kernels here\s+\S", table, re.M)

    backend.forget()  # a new process, as far as the kernels know; now every call of this kernel fails
    cuda_like(fake_triton(mip=raise_no_kernel_image))
    image = sorted((phantoms / "imagesTr").iterdir())[0]
    _, err = _cli(["predict", "-i", image, "-o", tmp_path / "seg.nii.gz", "-m", run / "path1.pt", "--device", "cpu",
                   "--ops-backend", "auto"], capsys)
    assert err.count(WARNING) == 1, err
    assert "projection kernels on cpu: reference (fallback: mip (float32): RuntimeError: CUDA error" in err
    assert (tmp_path / "seg.nii.gz").is_file()


def test_a_run_whose_kernels_pass_records_triton(cuda_like, phantoms, tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "auto")
    fake = cuda_like(fake_triton())
    run = tmp_path / "run"
    _, err = _cli(["train", "--path", 1, "--data", phantoms, "--out", run, "--device", "cpu", "--config", tiny_config,
                   "--epochs", 1], capsys)
    assert WARNING not in err and "path1: projection kernels on cpu: triton" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["path1"]["ops_backend"] == "triton"
    assert Checkpoint.load(run / "path1.pt").ops_backend == "triton"
    assert fake.calls["mip"] > 1 and fake.calls["backproject_explained"] > 1  # checked once, then trained on


def test_triton_forced_and_failing_ends_train_with_one_sentence(cuda_like, phantoms, tiny_config, tmp_path,
                                                                monkeypatch, capsys):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "auto")
    cuda_like(fake_triton(backproject=raise_no_kernel_image))
    code = main([str(a) for a in ["-q", "train", "--path", 1, "--data", phantoms, "--out", tmp_path / "run",
                                  "--device", "cpu", "--config", tiny_config, "--epochs", 1, "--ops-backend", "triton"]])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.fullmatch(r"error: the Triton kernel backproject \(float32\): RuntimeError: CUDA error: .*; use "
                        r"--ops-backend auto .* or reference \(VOL25D_OPS_BACKEND\)\n", err)


def test_info_on_a_checkpoint_from_before_the_record_says_not_recorded(capsys):
    table, _ = _cli(["info", OLD / "path2.pt"], capsys)
    assert re.search(r"^projection kernels\s+not recorded$", table, re.M)
    assert Checkpoint.load(OLD / "path2.pt").ops_backend is None


@pytest.mark.parametrize("command", [["train", "--path", "1", "--data", "d", "--out", "o"],
                                     ["predict", "-i", "a", "-o", "b", "-m", "c"], ["demo"]])
def test_train_predict_and_demo_take_ops_backend(command, capsys):
    assert build_parser().parse_args([*command, "--ops-backend", "reference"]).ops_backend == "reference"
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--ops-backend", "cuda"])
    assert exited.value.code == 2 and "invalid choice: 'cuda'" in capsys.readouterr().err

"""experiments/gpu_check.sh --dry-run: the prepared GPU run's every step on the CPU at tiny sizes (the Triton
kernels interpreted), so that the script cannot rot between the sessions that have a GPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "gpu_check.sh"
STEPS = ("checks", "train", "bench_ops", "benchmark")


def gpu_check(*args, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = gpu_check("--dry-run", "--out", out, "--limit-s", 500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_every_step_runs_and_is_recorded(dry_run):
    steps = [line.split("\t") for line in (dry_run / "steps.tsv").read_text().splitlines()]
    assert [step[0] for step in steps] == list(STEPS)
    assert all(status == "ok" for _, status, _ in steps), steps


def test_the_checks_compare_every_operator_in_both_precisions(dry_run):
    rows = json.loads((dry_run / "cuda_checks.json").read_text())
    names = " / ".join(row["check"] for row in rows)
    for op in ("mip", "project", "backproject"):
        for tag in ("fp32", "bf16"):
            assert f"{op} forward 8³ {tag}" in names
    assert "adjoint" in names and "mip backward (gather)" in names and "model gradients" in names
    assert all(row["ok"] for row in rows)


def test_the_summary_names_the_machine_and_the_figures(dry_run):
    text = (dry_run / "summary.md").read_text()
    assert "torch " in text and "Triton" in text and "GPU: none (CPU run)" in text
    assert "held-out mean Dice: 0." in text and "path 2:" in text
    assert "benchmark: vol25d: Dice" in text and "sweep: vol25d (16, 16, 16)" in text
    assert re.search(r"checks within tolerance: (\d+) of \1$", text, flags=re.MULTILINE)
    assert "all 4 steps ok" in text and "kernels: path1: projection kernels on cpu: cpu" in text
    assert (dry_run / "evaluation.csv").exists() and (dry_run / "bench_ops.md").exists()


def test_steps_past_the_time_limit_are_skipped_and_the_summary_still_written(tmp_path):
    done = gpu_check("--dry-run", "--out", tmp_path, "--limit-s", 0, timeout=120)
    assert done.returncode == 1, done.stderr  # nothing was measured: not a run to read as passed
    steps = [line.split("\t") for line in (tmp_path / "steps.tsv").read_text().splitlines()]
    assert [step[0] for step in steps] == list(STEPS)
    assert all(status == "skipped (time limit)" for _, status, _ in steps)
    text = (tmp_path / "summary.md").read_text()
    assert "| checks | skipped (time limit) |" in text and "**4 of 4 steps not ok: checks (skipped" in text


def test_a_python_without_torch_fails_every_step_exits_1_and_still_writes_the_summary(tmp_path):
    python = tmp_path / "python-without-torch"  # this interpreter without its site-packages
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), "--limit-s", "300"], capture_output=True,
                          text=True, encoding="utf-8", env={**os.environ, "PYTHON": str(python)}, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [step[0] for step in steps] == list(STEPS)
    assert all(status.startswith("failed (exit ") for _, status, _ in steps), steps
    text = (out / "summary.md").read_text()
    assert "**4 of 4 steps not ok: checks (failed (exit 1))" in text and "torch not importable" in text
    assert "| train | failed (exit 1) |" in text and "4 step(s) not ok; exit 1" in done.stdout


def test_the_script_writes_the_summary_itself_when_the_summary_script_cannot_run(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(out), "--limit-s", "60"], capture_output=True,
                          text=True, encoding="utf-8", env={**os.environ, "PYTHON": str(tmp_path / "no-such-python")},
                          timeout=120)
    assert done.returncode == 1 and "summary failed" in done.stderr
    text = (out / "summary.md").read_text()
    assert "could not write the summary" in text and "| checks | failed (exit 127) |" in text


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown option --frobnicate"),
    (["--limit-s", "soon"], "--limit-s takes whole seconds"),
    (["--wheels", "/nonexistent/wheels"], "is not a folder"),
])
def test_bad_options_are_one_line_and_exit_2(args, message, tmp_path):
    done = gpu_check(*args, "--out", tmp_path / "out", timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

"""experiments/bench_ops.py: end to end in a subprocess at its smoke sizes, and its grid_sample baseline."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vol25d.geometry import equal_angles
from vol25d.ops import mip

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPT = EXPERIMENTS / "bench_ops.py"
# No GPU in CI; hide one that is there so the GPU columns read the same everywhere.
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
TIME = re.compile(r"^\d+(\.\d+)? (µs|ms|s)( \(\d+ runs?(, no warm-up)?\))?$")
MEMORY = re.compile(r"^\d+(\.\d+)? (MiB|GiB)$")
RATIO = re.compile(r"^[\d,]+(\.\d+)?(e-\d+)?×$")


def bench(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=240)


def table(text: str, heading: str) -> list[dict]:
    """The Markdown table under ``## heading`` as one dict per row, keyed by the header."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert set(lines[1].replace("|", "").split()) == {"---"}
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True)) for line in lines[2:]]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.md"
    result = bench("--smoke", "--device", "cpu", "--threads", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    return result, out


def test_smoke_writes_the_report_and_prints_it(smoke):
    result, out = smoke
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# vol25d: speed and memory of the model and its operators")
    for fragment in ("## Machine", "- CPU: ", "torch on 1 thread", f"torch {torch.__version__}", "- GPU: none",
                     "## Settings", "16³, 24³", "## Definitions", "VmHWM"):  # fmt: skip
        assert fragment in text, fragment
    assert "| operator | volume (H×W×D) | CPU time | grid_sample MIP, CPU | speed-up over grid_sample |" in text
    assert "## Model: a path-1 training step and whole-volume inference (issue 3)" in result.stdout


def test_model_table_has_cpu_figures_and_no_gpu_ones(smoke):
    rows = table(smoke[1].read_text(encoding="utf-8"), "Model")
    assert list(rows[0]) == ["volume (H×W×D)", "step", "CPU time", "CPU peak memory", "GPU time", "GPU peak memory"]
    assert [(row["volume (H×W×D)"], row["step"]) for row in rows] == [
        (size, step)
        for size in ("16³", "24³")
        for step in ("path-1 training step, p = 2", "path-1 training step, p = 4", "inference, m = 8 (chunks of 16 views)")
    ]
    for row in rows:
        assert TIME.match(row["CPU time"]), row
        assert MEMORY.match(row["CPU peak memory"]), row
        assert row["GPU time"] == row["GPU peak memory"] == "not measured (no GPU)"
    # A training step holds the weights, their gradients and AdamW's two moments: more than inference.
    train, _, inference = (float(row["CPU peak memory"].split()[0]) for row in rows[:3])
    assert train > inference > 0


def test_operator_tables(smoke):
    text = smoke[1].read_text(encoding="utf-8")
    cpu = table(text, "Operators on the CPU")
    names = ["mip", "mip backward", "project", "backproject", "backproject backward"]
    assert [row["operator"] for row in cpu] == names * 2
    for row in cpu:
        assert TIME.match(row["CPU time"]), row
        if row["operator"] == "mip":
            assert TIME.match(row["grid_sample MIP, CPU"]) and RATIO.match(row["speed-up over grid_sample"]), row
        else:
            assert row["grid_sample MIP, CPU"] == row["speed-up over grid_sample"] == "—"
    gpu = table(text, "Operators on the GPU")
    assert len(gpu) == 10 and len(gpu[0]) == 9
    for row in gpu:
        assert all(value == "not measured (no GPU)" for key, value in row.items() if key not in ("operator", "volume (H×W×D)"))


def test_smoke_refuses_to_write_into_results():
    result = bench("--smoke", "--out", EXPERIMENTS / "results" / "smoke.md")
    assert result.returncode == 2
    assert "--smoke writes no figures into" in result.stderr
    assert not (EXPERIMENTS / "results" / "smoke.md").exists()


def test_grid_sample_baseline_is_the_same_mip_away_from_the_border(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location("bench_ops_under_test", SCRIPT)
    bench_ops = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench_ops)  # dataclasses look their module up
    spec.loader.exec_module(bench_ops)
    assert bench_ops.parse_size("512x512x256") == (256, 512, 512) and bench_ops.parse_size("24") == (24, 24, 24)

    generator = torch.Generator().manual_seed(0)
    volume = torch.zeros(1, 1, 5, 20, 20)
    # The minimum (0) all around: where mip ignores samples outside, the baseline's padding adds the minimum.
    volume[..., 3:-3, 3:-3] = torch.rand(5, 14, 14, generator=generator)
    views = 7
    grids = bench_ops.grid_sample_grids((5, 20, 20), views, torch.device("cpu"))
    expected = mip(volume, equal_angles(views))
    baseline = bench_ops.grid_sample_mip(volume, grids)
    assert baseline.shape == expected.shape == (1, 1, views, 5, 30)
    torch.testing.assert_close(baseline, expected, atol=1e-5, rtol=0)

"""experiments/benchmark.py: the whole harness end to end at its smoke sizes, in a subprocess on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py"
METHODS = ("vol25d", "unet3d", "unet3d-patch", "slice2d", "stack25d")


def test_smoke_run_writes_a_row_per_method_and_a_plot(tmp_path):
    # No GPU in CI; hide one that is there so the run is the same everywhere.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=85)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "benchmark.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] in METHODS:
            rows[cells[0]] = cells
    assert set(rows) == set(METHODS)
    for method, cells in rows.items():
        assert 0.0 <= float(cells[1]) <= 1.0, (method, cells)
    assert "not measured (CPU)" in text
    assert "path-2 gain" in text
    assert (tmp_path / "benchmark.png").stat().st_size > 0


def _module():
    return load_script(SCRIPT, "benchmark")


def test_methods_are_parsed_in_table_order_and_an_unknown_one_is_one_clear_error():
    benchmark = _module()
    assert benchmark.parse_methods("slice2d, vol25d") == ("vol25d", "slice2d")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--methods", "vol25d,unet2d", "--out-dir", "unused"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "unknown method(s) ['unet2d']" in done.stderr and "slice2d" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_patch_is_at_most_the_volume():
    benchmark = _module()
    settings = benchmark.Settings(1.0, 48, 1, 1, None, benchmark.torch.device("cpu"), smoke=False)
    assert settings.patch_for((48, 40, 200)) == (48, 32, 96)
    assert settings.patch_for((8, 8, 8)) == (16, 16, 16)  # the network's smallest input, padded


def _report(path, reconstruction, rows, budget="300"):
    table = "\n".join(f"| {method} | {dice:.3f} | 1.00 | 0.900 | n/a | n/a | 10 | 1.0 | 0.100 |" for method, dice in rows)
    path.write_text(f"# Benchmark: x\n\n| method | Dice | HD95 (mm) | clDice | train memory | inference memory | steps | "
                    f"train s | inference s/volume |\n|---|---|---|---|---|---|---|---|---|\n{table}\n\n## Machine\n\n"
                    f"CPU x\n\n## Settings\n\n- methods: a; vol25d's reconstruction: {reconstruction}\n"
                    f"- budget {budget} s of training per method\n- data: phantoms 48³\n")
    return path


def test_collect_gives_mean_and_spread_per_method_over_runs_and_refuses_mixed_budgets(tmp_path):
    benchmark = _module()
    runs = [_report(tmp_path / "a.md", "image", [("vol25d", 0.8), ("slice2d", 0.7)]),
            _report(tmp_path / "b.md", "image", [("vol25d", 0.6), ("slice2d", 0.7)]),
            _report(tmp_path / "c.md", "seed", [("vol25d", 0.5)]),
            _report(tmp_path / "e.md", "image; T reads the image: yes", [("vol25d", 0.9)])]
    text = benchmark.collect(runs, tmp_path, "over")
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                                          if line.startswith("| ") and not line.startswith("| method"))}
    assert rows["vol25d (image)"][1:4] == ["2", "0.700 ± 0.100", "0.600"]
    assert rows["slice2d"][2] == "0.700 ± 0.000" and rows["vol25d (seed)"][1] == "1"
    assert rows["vol25d (image, T reads the image)"][1:3] == ["1", "0.900 ± 0.000"]
    assert (tmp_path / "over.md").read_text() == text
    odd = _report(tmp_path / "d.md", "image", [("vol25d", 0.8)], budget="60")
    with pytest.raises(ValueError, match="d.md"):
        benchmark.collect([runs[0], odd], tmp_path, "over")


def test_a_baseline_trains_for_its_budget_of_wall_time_whatever_its_step_costs(tmp_path):
    benchmark = _module()
    settings = benchmark.Settings(1.0, 24, 2, 1, None, benchmark.torch.device("cpu"), smoke=True)
    train_dir, train_cases, _ = benchmark.make_data(settings, tmp_path)
    train_data, _, _ = benchmark.prepare_cases(benchmark.load_dataset(train_dir), train_cases, [])
    augment = benchmark.TrainConfig().augment
    short = benchmark.train_baseline("slice2d", settings, train_data, augment)[1]
    longer = benchmark.train_baseline("slice2d", settings, train_data, augment, budget_s=2.5)[1]
    for run, budget_s in ((short, 1.0), (longer, 2.5)):  # the budget, less half a step (steps slow under load)
        assert budget_s - 0.5 * run["last_step_s"] <= run["train_s"]
    assert longer["steps"] > short["steps"] >= 1

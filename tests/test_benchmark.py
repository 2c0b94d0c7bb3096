"""experiments/benchmark.py: the whole harness end to end at its smoke sizes, in a subprocess on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmark.py"
# Every method but nnU-Net's, which needs the bench extra (tests/test_nnunet_baseline.py runs it where installed).
METHODS = ("vol25d", "vol25d-path1", "vol25d-path2aug", "dynunet3d", "slice2d", "stack25d", "unet3d", "unet3d-patch")


def test_smoke_run_writes_a_row_per_method_and_a_plot(tmp_path):
    # No GPU in CI; hide one that is there so the run is the same everywhere.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out-dir", str(tmp_path), "--methods",
                           ",".join(METHODS), "--keep-runs", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=240)
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
    # the kept run folders, and what path 2 changed in them
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["s0_vol25d", "s0_vol25d-path1", "s0_vol25d-path2aug"]
    assert not (runs / "s0_vol25d-path1" / "path2.pt").exists() and (runs / "s0_vol25d" / "path2.pt").exists()
    changes = load_script(SCRIPT.with_name("path2_changes.py"), "path2_changes")
    out = tmp_path / "changes.md"
    assert changes.main([str(runs / "s0_vol25d"), str(runs / "s0_vol25d-path2aug"), "--out", str(out)]) == 0
    table = [line for line in out.read_text().splitlines() if line.startswith("| s0_")]
    assert [line.split(" | ")[0] for line in table] == ["| s0_vol25d", "| s0_vol25d-path2aug"]
    assert all(" → " in line and "n/a" not in line.split(" | ")[2] for line in table)
    assert "Path 2 kept the path-1 model in" in out.read_text()
    refused = subprocess.run([sys.executable, str(SCRIPT.with_name("path2_changes.py")), str(runs / "s0_vol25d-path1"),
                              "--out", str(tmp_path / "x.md")], capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2 and "no path1.pt and path2.pt there" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x.md").exists()


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


def _report(path, reconstruction, rows, budget="300", seed=0, commit="abc1234"):
    table = "\n".join(f"| {method} | {dice:.3f} | 1.00 | 0.900 | 10 | 1.0 | 0.1 | 1 s | 0.100 | n/a | n/a |"
                      for method, dice in rows)
    path.write_text(f"# Benchmark: x\n\n| method | Dice | HD95 (mm) | clDice | steps | train s | s/step | best checkpoint "
                    f"| inference s/volume | train memory | inference memory |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
                    f"{table}\n\n## Machine\n\nCPU x; vol25d 0.1.0 at commit {commit}; 2026-12-07 01:00 UTC\n\n"
                    f"## Settings\n\n- methods: a; vol25d's reconstruction: {reconstruction}\n"
                    f"- budget {budget} s of training per method\n"
                    f"- data: other phantoms 48³, 16 training (seed {1000 * seed + 1}; 20% held out) + 4 test (seed "
                    f"{1000 * seed + 2})\n- seed: {seed}\n")
    return path


def _rows(text, header="| method"):
    return {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                                          if line.startswith("| ") and not line.startswith(header)
                                          and not line.startswith("| difference"))}


def test_collect_gives_mean_and_sample_spread_per_method_and_names_collapsed_runs(tmp_path):
    benchmark = _module()
    runs = [_report(tmp_path / "a.md", "image", [("vol25d", 0.8), ("vol25d-path1", 0.75), ("slice2d", 0.7)], seed=1),
            _report(tmp_path / "b.md", "image", [("vol25d", 0.6), ("vol25d-path1", 0.62), ("slice2d", 0.05)], seed=2),
            _report(tmp_path / "c.md", "seed", [("vol25d", 0.5)], seed=3),
            _report(tmp_path / "e.md", "image; T reads the image: yes", [("vol25d", 0.9)], seed=4)]
    text = benchmark.collect(runs, tmp_path, "over")
    rows = _rows(text)
    assert rows["vol25d (image)"][1:5] == ["2", "0.700 ± 0.141", "0.600", "none"]  # ddof 1: sd of (0.8, 0.6)
    assert rows["slice2d"][4] == "seed 2" and rows["slice2d"][2] == "0.375 ± 0.460"
    assert rows["vol25d (seed)"][1] == "1" and rows["vol25d (seed)"][2] == "0.500 ± n/a"
    assert "| vol25d (image) − slice2d | 2 | +0.325 |" in text
    # path 1 alone is a method of its own, so path 2's worth at equal time is one of vol25d's paired differences
    assert rows["vol25d-path1"][2] == "0.685 ± 0.092"
    assert "| vol25d (image) − vol25d-path1 | 2 | +0.015 |" in text and "1/2 |" in text
    assert (tmp_path / "over.md").read_text() == text


@pytest.mark.parametrize("change, word", [(dict(budget="60"), "budget"), (dict(commit="def5678"), "commit")])
def test_collect_refuses_reports_of_another_budget_or_commit(tmp_path, change, word):
    benchmark = _module()
    one = _report(tmp_path / "a.md", "image", [("vol25d", 0.8)], seed=1)
    odd = _report(tmp_path / "d.md", "image", [("vol25d", 0.8)], seed=2, **change)
    with pytest.raises(ValueError, match=f"d.md differs from .*a.md in its {word}"):
        benchmark.collect([one, odd], tmp_path, "over")


def test_collect_refuses_a_method_given_twice_for_one_seed(tmp_path):
    benchmark = _module()
    one = _report(tmp_path / "a.md", "image", [("slice2d", 0.8)], seed=1)
    two = _report(tmp_path / "b.md", "image", [("slice2d", 0.7)], seed=1)
    with pytest.raises(ValueError, match="slice2d for seed 1 is given twice"):
        benchmark.collect([one, two], tmp_path, "over")


def test_the_bootstrap_interval_holds_the_mean_and_narrows_with_agreeing_runs():
    benchmark = _module()
    low, high = benchmark.bootstrap_interval([0.01, 0.02, 0.03, 0.02, 0.01])
    assert low <= 0.018 <= high and low > 0
    wide = benchmark.bootstrap_interval([-0.2, 0.3, -0.1, 0.25, 0.0])
    assert wide[0] < 0 < wide[1]


def test_fresh_data_seeds_never_share_a_case_across_runs():
    benchmark = _module()
    seeds = [benchmark.Settings(1.0, 24, 2, 1, None, benchmark.torch.device("cpu"), smoke=True, seed=s).data_seeds()
             for s in range(30)]
    flat = [value for pair in seeds for value in pair]
    assert len(set(flat)) == len(flat)


def _smoke_data(benchmark, tmp_path, budget_s, n_train):
    """Smoke settings and the prepared training and validation cases (the last training case validates)."""
    settings = benchmark.Settings(budget_s, 24, n_train, 1, None, benchmark.torch.device("cpu"), smoke=True)
    train_dir, train_cases, _ = benchmark.make_data(settings, tmp_path)
    train_data, val_data, _ = benchmark.prepare_cases(benchmark.load_dataset(train_dir), train_cases[:-1],
                                                      train_cases[-1:])
    return settings, train_data, val_data


def test_a_baseline_trains_for_its_budget_of_wall_time_whatever_its_step_costs(tmp_path):
    benchmark = _module()
    settings, train_data, _ = _smoke_data(benchmark, tmp_path, 1.0, 2)
    augment = benchmark.TrainConfig().augment
    short = benchmark.train_baseline("slice2d", settings, train_data, augment)[1]
    longer = benchmark.train_baseline("slice2d", settings, train_data, augment, budget_s=2.5)[1]
    for run, budget_s in ((short, 1.0), (longer, 2.5)):  # the budget, less half a step (steps slow under load)
        assert budget_s - 0.5 * run["last_step_s"] <= run["train_s"]
    assert longer["steps"] > short["steps"] >= 1


def test_a_baseline_keeps_its_best_validation_weights(tmp_path):
    benchmark = _module()
    settings, train_data, val_data = _smoke_data(benchmark, tmp_path, 1.5, 3)
    model, run = benchmark.train_baseline("slice2d", settings, train_data, benchmark.TrainConfig().augment,
                                          val_data=val_data)
    assert run["validations"] >= 2 and run["best_s"] <= run["train_s"]
    assert benchmark._validation_dice(model, val_data) == pytest.approx(run["best_val"])


def test_the_time_plot_has_a_point_per_method_and_budget(tmp_path):
    benchmark = _module()
    runs = [_report(tmp_path / f"{budget}_{seed}.md", "image", [("vol25d", dice), ("slice2d", dice - 0.1)],
                    budget=budget, seed=seed)
            for budget, seed, dice in (("100", 1, 0.6), ("100", 2, 0.7), ("300", 1, 0.8), ("300", 2, 0.8))]
    curves = benchmark.time_to_accuracy(runs, tmp_path / "t.png")
    assert [round(d, 3) for _, d, _, _ in curves["vol25d"]] == [0.65, 0.8]
    assert [n for *_, n in curves["slice2d"]] == [2, 2]
    assert (tmp_path / "t.png").stat().st_size > 0
    with pytest.raises(ValueError, match="commit"):
        benchmark.time_to_accuracy([runs[0], _report(tmp_path / "x.md", "image", [("vol25d", 0.5)], commit="f00")],
                                   tmp_path / "t.png")

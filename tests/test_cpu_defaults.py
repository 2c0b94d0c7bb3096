"""experiments/cpu_defaults.py: its per-seed rows read back and collected as mean ± sd over seeds."""

from pathlib import Path

import pytest

from conftest import load_script

cpu_defaults = load_script(Path(__file__).resolve().parents[1] / "experiments" / "cpu_defaults.py", "cpu_defaults")


def _results(path: Path, rows: list[tuple]) -> Path:
    lines = ["# a run", "", *cpu_defaults.HEADER, *map(cpu_defaults.format_row, rows)]
    lines += ["", *cpu_defaults.summary(rows)]  # the summary rows have other columns and are not read back
    path.write_text("\n".join(lines) + "\n")
    return path


def test_collect_gives_mean_and_spread_over_seeds_per_generator_pair_and_size(tmp_path):
    first = _results(tmp_path / "a.md", [(0, "other", "other", 48, 0.80, 0.70, 20, 5, 300.0),
                                         (0, "other", "other", 96, 0.60, 0.50, 20, 5, 300.0)])
    second = _results(tmp_path / "b.md", [(1, "other", "other", 48, 0.90, 0.85, 20, 5, 400.0)])
    assert cpu_defaults.read_rows(first) == [(0, "other", "other", 48, 0.8, 0.7, 20, 5, 300.0),
                                             (0, "other", "other", 96, 0.6, 0.5, 20, 5, 300.0)]
    assert cpu_defaults.main(["--collect", str(first), str(second), "--name", "over", "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "over.md").read_text()
    assert "| other | other | 48³ | 2 | 0.850 ± 0.050 | 0.700 | 350, 400 |" in text
    assert "| other | other | 96³ | 1 | 0.600 ± 0.000 | 0.500 | 300, 300 |" in text
    assert "vol25d |" not in text  # no row for a pair that was not run


def test_every_generator_writes_a_dataset_the_training_reads(tmp_path):
    from vol25d.data.check import check_dataset

    for generator in cpu_defaults.GENERATORS:
        out = cpu_defaults.write_data(generator, tmp_path / generator, 2, 16, 0)
        assert check_dataset(out) == [], generator
        assert len(list((out / "imagesTr").iterdir())) == 2


def test_view_share_scores_the_trained_model_from_its_views_and_from_the_labels(run, phantoms):
    import torch

    from vol25d import metrics
    from vol25d.data.dataset import load_dataset
    from vol25d.data.prepare import prepare_cases
    from vol25d.infer import Predictor

    from_u, from_label = cpu_defaults.view_share(run / "path2.pt", phantoms)
    assert 0.0 <= from_u <= 1.0 and 0.0 <= from_label <= 1.0
    # From U's views is the model's own prediction on the preprocessed grid, case by case.
    predictor = Predictor.load(run / "path2.pt", "cpu")
    data = load_dataset(phantoms)
    prepared, _, _ = prepare_cases(data, data.cases, [], config=predictor.preprocess)
    dice = []
    with torch.no_grad():
        for case in prepared:
            found = predictor.model.eval()(case.image[None].float())[0, 0] >= 0.5
            dice.append(metrics.dice(found.numpy(), case.label[0].bool().numpy()))
    assert from_u == pytest.approx(sum(dice) / len(dice), abs=1e-6)
    lines = cpu_defaults.share_tables([(0, "vol25d", 24, from_u, from_label), (1, "vol25d", 24, 0.5, 0.7)])
    assert f"| 0 | vol25d | 24³ | {from_u:.3f} | {from_label:.3f} |" in lines
    mean_u, mean_label = (from_u + 0.5) / 2, (from_label + 0.7) / 2
    assert any(line.startswith(f"| vol25d | 24³ | 2 | {mean_u:.3f} ± ") and f"| {mean_label:.3f} ± " in line
               for line in lines)


def test_collect_puts_the_runs_shares_of_the_error_together(tmp_path):
    for name, shares in (("a", [(0, "other", 48, 0.8, 0.9)]), ("b", [(1, "other", 48, 0.7, 0.85)])):
        lines = ["# a run", "", *cpu_defaults.HEADER,
                 cpu_defaults.format_row((shares[0][0], "other", "other", 48, 0.8, 0.7, 20, 5, 300.0)),
                 "", *cpu_defaults.share_tables(shares)]
        (tmp_path / f"{name}.md").write_text("\n".join(lines) + "\n")
    assert cpu_defaults.read_shares(tmp_path / "a.md") == [(0, "other", 48, 0.8, 0.9)]
    assert cpu_defaults.main(["--collect", str(tmp_path / "a.md"), str(tmp_path / "b.md"), "--name", "over",
                              "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "over.md").read_text()
    assert "| other | 48³ | 2 | 0.750 ± 0.050 | 0.875 ± 0.025 |" in text
    assert "| 0 | other | 48³ |" not in text  # the per-seed rows stay in the runs' own files


def test_path_2_against_path_1_gives_the_paired_difference_with_its_bootstrap_interval():
    pairs = [(10, "other", "other", 48, 0.80, 0.82, 3), (11, "other", "other", 48, 0.70, 0.70, 0),
             (12, "other", "other", 48, 0.90, 0.86, 2)]
    text = "\n".join(cpu_defaults.paths_tables(pairs))
    assert "| 12 | other | other | 48³ | 0.900 | 0.860 | -0.040 | 2 |" in text
    low, high = cpu_defaults.bootstrap_interval([0.02, 0.0, -0.04])
    assert -0.04 <= low < high <= 0.02  # within the smallest and largest difference
    assert (f"| other | other | 48³ | 3 | 0.800 ± 0.100 | 0.793 ± 0.083 | -0.007 ({low:+.3f}, {high:+.3f}) | "
            "1 of 3 |") in text
    assert cpu_defaults.bootstrap_interval([0.01, 0.01]) == (0.01, 0.01)

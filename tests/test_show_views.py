"""experiments/show_views.py: U's views against the label's MIPs, drawn for a trained checkpoint."""

from pathlib import Path

from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "show_views.py"


def test_it_draws_a_row_per_case_and_reports_the_precision_of_us_view(run, phantoms, tmp_path, capsys):
    show_views = load_script(SCRIPT, "show_views")
    out = tmp_path / "views.png"
    assert show_views.main([str(run / "path2.pt"), f"{phantoms}:0,2", "--out", str(out), "--view", "3"]) == 0
    printed = capsys.readouterr().out
    precisions = [float(p) for p in printed.rsplit(": ", 1)[1].split(", ")]
    assert len(precisions) == 2 and all(0.0 <= p <= 1.0 for p in precisions)
    assert out.stat().st_size > 0 and out.read_bytes()[:4] == b"\x89PNG"

"""experiments/show_views.py: U's views against the label's MIPs, drawn for a trained checkpoint."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "show_views.py"


def _module():
    spec = importlib.util.spec_from_file_location("show_views", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["show_views"] = module
    spec.loader.exec_module(module)
    return module


def test_it_draws_a_row_per_case_and_reports_the_precision_of_us_view(run, phantoms, tmp_path, capsys):
    show_views = _module()
    out = tmp_path / "views.png"
    assert show_views.main([str(run / "path2.pt"), f"{phantoms}:0,2", "--out", str(out), "--view", "3"]) == 0
    printed = capsys.readouterr().out
    precisions = [float(p) for p in printed.rsplit(": ", 1)[1].split(", ")]
    assert len(precisions) == 2 and all(0.0 <= p <= 1.0 for p in precisions)
    assert out.stat().st_size > 0 and out.read_bytes()[:4] == b"\x89PNG"

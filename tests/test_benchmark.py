"""experiments/benchmark.py: the whole harness end to end at its smoke sizes, in a subprocess on CPU."""

import os
import subprocess
import sys
from pathlib import Path

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

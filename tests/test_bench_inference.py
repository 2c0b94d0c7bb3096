"""experiments/bench_inference.py: sizes, the volume every method predicts, one cell end to end, and a cell
stopped at its time limit reported as stopped."""

import pytest

from conftest import load_script
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_inference.py"


def _module():
    return load_script(SCRIPT, "bench_inference")


def test_sizes_are_cubes_or_three_sides_and_a_bad_one_is_one_sentence():
    bench = _module()
    assert bench.parse_size("48") == (48, 48, 48)
    assert bench.parse_size("512x512x150") == (512, 512, 150)
    with pytest.raises(ValueError, match="give N or XxYxZ"):
        bench.parse_size("8x8")


def test_the_volume_has_its_size_tubes_in_its_label_and_slices_thicker_when_not_a_cube():
    bench = _module()
    image, label, affine = bench.make_volume((32, 24, 20))
    assert image.shape == label.shape == (32, 24, 20)
    assert 0 < label.mean() < 0.5 and image[label > 0].mean() > image[label == 0].mean() + 200
    assert list(affine.diagonal()[:3]) == [0.5, 0.5, 1.0]


def test_a_cell_reports_its_seconds_and_memory_and_a_slow_one_is_stopped(tmp_path):
    bench = _module()
    out = tmp_path / "inference.md"
    assert bench.main(["--sizes", "24", "--methods", "vol25d,slice2d", "--out", str(out)]) == 0
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for method in ("vol25d", "slice2d"):
        assert " s, " in rows[method] and "GiB" in rows[method], rows[method]
    stopped = bench.run_cell("vol25d", (24, 24, 24), 1, timeout_s=0.5)
    assert stopped["stopped"] >= 0.5 and "stopped after" in bench._cell_text(stopped)

"""vol25d.report's PNG and RUN/progress.png (vol25d.train.curves) are drawn without matplotlib's global
backend: a notebook that plots inline before and after keeps its backend."""

import csv

import matplotlib
import numpy as np
import pytest

from vol25d.io import Volume
from vol25d.report import write_report
from vol25d.train.curves import write_progress_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def svg_backend():
    """A backend other than Agg (as a notebook has its inline one), restored after the test."""
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    yield "svg"
    matplotlib.use(before)


def _volume() -> tuple[Volume, np.ndarray]:
    image = np.random.default_rng(0).random((12, 12, 12), dtype=np.float32)
    probabilities = np.zeros((12, 12, 12, 1), np.float32)
    probabilities[4:8, 5:7, 3:9] = 0.9
    return Volume(image, np.diag([0.8, 0.8, 1.0, 1.0])), probabilities


def test_the_report_leaves_the_backend_alone(svg_backend, tmp_path):
    image, probabilities = _volume()
    written = write_report(image, probabilities, tmp_path / "report.png")
    assert matplotlib.get_backend() == svg_backend
    assert written == tmp_path / "report.png" and written.read_bytes().startswith(PNG_SIGNATURE)


def test_the_progress_plot_leaves_the_backend_alone(svg_backend, tmp_path):
    with (tmp_path / "path1_metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "train_loss", "val_dice", "lr"])
        writer.writeheader()
        writer.writerows([{"epoch": e, "train_loss": 1 / e, "val_dice": 0.1 * e, "lr": 1e-3} for e in (1, 2)])
    assert write_progress_plot(tmp_path).read_bytes().startswith(PNG_SIGNATURE)
    assert matplotlib.get_backend() == svg_backend

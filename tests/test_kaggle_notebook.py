"""experiments/kaggle_gi_tract.ipynb runs end to end (SMOKE settings, CPU) on a small competition-shaped folder."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vol25d.data.gitract import CLASSES, rle_decode, rle_encode

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "kaggle_gi_tract.ipynb"

# (case, case_day, W, H, pw, ph, slice numbers): W ≠ H so a swapped axis shows in the RLE check; one test
# case-day does not start at slice 1, so ids must come from the file names.
TRAIN_DAYS = [
    ("case1", "case1_day0", 40, 32, 1.50, 1.50, range(1, 9)),
    ("case1", "case1_day3", 40, 32, 1.50, 1.50, range(1, 10)),
    ("case2", "case2_day1", 32, 40, 1.63, 1.63, range(1, 9)),
    ("case4", "case4_day0", 40, 32, 1.50, 1.50, range(1, 9)),
]
TEST_DAYS = [
    ("case3", "case3_day2", 40, 32, 1.50, 1.50, range(1, 9)),
    ("case5", "case5_day1", 32, 40, 1.63, 1.63, range(3, 11)),
]


def _slice(h: int, w: int, z: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 16-bit abdomen-like slice (body ellipse, three brighter organs that move with ``z``) and its masks."""
    y, x = np.mgrid[:h, :w]
    body = ((y - h / 2) / (0.45 * h)) ** 2 + ((x - w / 2) / (0.45 * w)) ** 2 <= 1
    masks = {
        "large_bowel": (((y - h / 2) ** 2 + (x - 0.3 * w) ** 2) <= 16) & body,
        "small_bowel": (np.abs(y - 0.6 * h) < 3) & (np.abs(x - 0.55 * w - z % 3) < 5) & body,
        "stomach": (((y - 0.35 * h) ** 2 + (x - 0.7 * w) ** 2) <= 9) & body & (z < 5),
    }
    pixels = np.where(body, 800.0, 0.0) + rng.normal(0, 40, (h, w))
    for level, mask in zip((1400, 1800, 2400), masks.values()):
        pixels[mask] = level + rng.normal(0, 40, int(mask.sum()))
    return np.clip(pixels, 0, 65535).astype(np.uint16), masks


@pytest.fixture
def competition(tmp_path) -> Path:
    """The competition folder: train/ (4 case-days), train.csv, test/ (2 case-days), sample_submission.csv."""
    rng = np.random.default_rng(0)
    src = tmp_path / "competition"
    csv_rows = []
    for split, days in (("train", TRAIN_DAYS), ("test", TEST_DAYS)):
        for case, case_day, w, h, pw, ph, numbers in days:
            scans = src / split / case / case_day / "scans"
            scans.mkdir(parents=True)
            for z, number in enumerate(numbers):
                pixels, masks = _slice(h, w, z, rng)
                Image.fromarray(pixels).save(scans / f"slice_{number:04d}_{w}_{h}_{pw:.2f}_{ph:.2f}.png")
                if split == "train":
                    csv_rows += [(f"{case_day}_slice_{number:04d}", name, rle_encode(masks[name])) for name in CLASSES]
    with (src / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "class", "segmentation"), *csv_rows])
    (src / "sample_submission.csv").write_text("id,class,predicted\n")  # empty, as the public one is
    return src


def _kernel_of_this_interpreter(tmp_path, monkeypatch) -> str:
    """A kernelspec running this Python, so that a 'python3' kernelspec installed elsewhere cannot take over."""
    spec = tmp_path / "jupyter" / "kernels" / "vol25d-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "vol25d test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return spec.name


def test_notebook_runs_and_writes_a_valid_submission(competition, tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    out = tmp_path / "out"
    injected = nbformat.v4.new_code_cell(f"DATA_DIR = {str(competition)!r}\nOUT_DIR = {str(out)!r}\nSMOKE = True")
    notebook.cells.insert(tagged[0] + 1, injected)

    kernel = _kernel_of_this_interpreter(tmp_path, monkeypatch)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name=kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails the test with its traceback

    with (out / "submission.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["id", "class", "predicted"]
        rows = list(reader)
    shapes = {}  # slice id → (H, W)
    for _, case_day, w, h, _, _, numbers in TEST_DAYS:
        shapes.update({f"{case_day}_slice_{number:04d}": (h, w) for number in numbers})
    assert sorted((r[0], r[1]) for r in rows) == sorted((i, name) for i in shapes for name in CLASSES)
    for slice_id, _, rle in rows:
        mask = rle_decode(rle, shapes[slice_id], name=slice_id)  # raises if a run leaves the slice
        assert mask.shape == shapes[slice_id]
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "submitting with projection=" in outputs and "16 test slices" in outputs
    figures = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # the views the model sees; validation slices with truth and prediction
    assert not (out / "vol25d_work" / "dataset").exists()
    assert {p.name for p in (out / "vol25d_work" / "runs").iterdir()} == {"mip", "sum"}
